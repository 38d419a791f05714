//! Rebuilding index entries from records recovery found past the
//! checkpoint's `indexed_upto`, refusing records that do not continue their
//! queue (a forged or garbled queue offset must never decide how many
//! placeholders are allocated).

use std::path::Path;

use super::fs::Fs;
use super::key_index;
use super::queue_index::QueueEntry;
use super::record::{self, StoredMessage};
use super::recovery::{self, Damage, DamageKind};
use super::store::{queue_mut, Writer};
use super::StorageError;

/// Re-creates the index entries of a record found past the checkpoint.
///
/// Its queue offset must continue its queue. A gap is accepted only as
/// large as the corrupt regions before it could have held records (each
/// takes at least [`record::MIN_FRAME_LEN`] bytes); each missing offset
/// gets a placeholder. Anything else is refused and returned as damage: no
/// number read off the disk decides how much is allocated.
pub(crate) fn index_replayed(
    fs: &dyn Fs,
    queues_dir: &Path,
    w: &mut Writer,
    pos: u64,
    size: u32,
    msg: &StoredMessage,
    damage: &[Damage],
) -> Result<Option<Damage>, StorageError> {
    if !recovery::valid_topic(&msg.topic) {
        return Ok(Some(refused(
            pos,
            size,
            format!("topic {:?} is not a valid name", msg.topic),
        )));
    }
    let q = queue_mut(fs, queues_dir, &mut w.queues, &mut w.new_dirs, &msg.topic, msg.queue_id)?;
    let next = q.next_offset();
    if msg.queue_offset < next {
        tracing::warn!(pos, topic = %msg.topic, queue = msg.queue_id, offset = msg.queue_offset, "record already indexed; skipped");
        return Ok(None);
    }
    let gap = msg.queue_offset - next;
    let lost_bytes: u64 = damage
        .iter()
        .filter(|d| d.kind == DamageKind::Corrupt && d.from < pos)
        .map(|d| d.to.min(pos) - d.from)
        .sum();
    if gap > lost_bytes / record::MIN_FRAME_LEN as u64 {
        return Ok(Some(refused(
            pos,
            size,
            format!(
                "queue offset {} of {}/{} does not continue the queue at {next} (corrupt regions before it hold {lost_bytes} bytes)",
                msg.queue_offset, msg.topic, msg.queue_id
            ),
        )));
    }
    for _ in 0..gap {
        // Offsets whose records were lost to corruption: keep the queue dense.
        q.push(QueueEntry {
            pos,
            size: 0,
            tag_hash: 0,
        });
    }
    q.push(QueueEntry {
        pos,
        size,
        tag_hash: msg.tags.as_deref().map(key_index::hash).unwrap_or(0),
    });
    if let Some(k) = &msg.key {
        w.keys.insert(k, pos);
    }
    Ok(None)
}

fn refused(pos: u64, size: u32, detail: String) -> Damage {
    Damage {
        kind: DamageKind::Corrupt,
        segment: String::new(),
        from: pos,
        to: pos + u64::from(size),
        detail,
    }
}
