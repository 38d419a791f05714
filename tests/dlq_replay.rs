//! Dead-letter replay rules, in-process: replays are recorded durably, a
//! message that keeps coming back is quarantined instead of looping, and
//! bulk replays honour their filters and dry runs.

use std::sync::Arc;
use std::time::Duration;

use waybill::broker::dlq::ReplayFilter;
use waybill::broker::retry::RetryPolicy;
use waybill::broker::{Broker, BrokerError, BrokerOptions, Outgoing};
use waybill::storage::fs::RealFs;
use waybill::storage::{Flush, Store, StoreOptions};

fn broker(dir: &std::path::Path) -> anyhow::Result<Broker> {
    let store = Arc::new(Store::open(Arc::new(RealFs), StoreOptions::new(dir, Flush::Sync))?);
    Ok(Broker::new(
        store,
        BrokerOptions {
            // Every failure dead-letters at once; quarantine on the 2nd return.
            retry: RetryPolicy::with_delays(vec![Duration::from_millis(10)], 0),
            replay_guard: 1,
            ..BrokerOptions::default()
        },
    )?)
}

async fn send(b: &Broker, key: &str) -> anyhow::Result<String> {
    let r = b
        .send(Outgoing {
            topic: "orders".into(),
            key: Some(key.into()),
            body: format!("body of {key}").into_bytes(),
            ..Outgoing::default()
        })
        .await?;
    Ok(r.id.to_string())
}

#[tokio::test]
async fn given_a_message_that_keeps_failing_should_be_quarantined_not_replayed_in_a_loop() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let b = broker(tmp.path())?;
    let poison = send(&b, "poison").await?;
    let other = send(&b, "other").await?;
    b.send_back("g", &poison, "boom 1").await?;
    b.send_back("g", &other, "boom").await?;

    let letters = b.dead_letters("g")?;
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|d| d.state == "dead" && d.returns == 1));
    let first = letters[0].id.clone();
    assert_eq!(letters[0].origin_id, poison);

    // Replayed, fails again, back in the DLQ: now past the guard.
    let replay = b.replay(&first, "alice", false).await?;
    assert_eq!(replay.dlq_id, first);
    b.send_back("g", &replay.new_id, "boom 2").await?;
    let letters = b.dead_letters("g")?;
    let poison_letters: Vec<_> = letters.iter().filter(|d| d.origin_id == poison).collect();
    assert_eq!(poison_letters.len(), 2);
    assert_eq!(poison_letters[0].state, "replayed");
    assert_eq!(poison_letters[0].replays[0].by, "alice");
    assert_eq!(poison_letters[1].state, "quarantined");
    assert_eq!(poison_letters[1].returns, 2);
    assert_eq!(poison_letters[1].reason, "boom 2");

    // Bulk replay skips quarantined letters; filters and dry runs hold.
    let everything = ReplayFilter::default();
    let (matched, done) = b.replay_all("g", &everything, "bob", true, None).await?;
    assert_eq!(
        matched.iter().map(|d| d.origin_id.as_str()).collect::<Vec<_>>(),
        vec![other.as_str()]
    );
    assert!(done.is_empty(), "a dry run replays nothing");
    let future = ReplayFilter {
        from_ms: Some(chrono::Utc::now().timestamp_millis() + 60_000),
        ..ReplayFilter::default()
    };
    assert!(b.replay_all("g", &future, "bob", true, None).await?.0.is_empty());
    let by_key = ReplayFilter {
        key: Some("nope".into()),
        ..ReplayFilter::default()
    };
    assert!(b.replay_all("g", &by_key, "bob", true, None).await?.0.is_empty());

    // A single replay of a quarantined letter needs force.
    let quarantined = poison_letters[1].id.clone();
    match b.replay(&quarantined, "bob", false).await {
        Err(BrokerError::Conflict(msg)) => assert!(msg.contains("quarantined")),
        other => panic!("expected a quarantine refusal, got {other:?}"),
    }
    b.replay(&quarantined, "bob", true).await?;

    // Replay records survive a restart.
    drop(b);
    let b = broker(tmp.path())?;
    let letters = b.dead_letters("g")?;
    assert_eq!(letters.iter().filter(|d| d.state == "replayed").count(), 2);
    let (_, done) = b.replay_all("g", &everything, "carol", false, Some(1000)).await?;
    assert_eq!(done.len(), 1, "only the never-replayed letter is left");
    assert!(b.dead_letters("g")?.iter().all(|d| d.state == "replayed"));
    Ok(())
}

/// A crash after the replayed copy reached the log but before its
/// `%REPLAYS%` record: the restart finds the replay on the copy itself, so
/// the letter is not replayed a second time.
#[tokio::test]
async fn given_a_copy_without_its_replay_record_the_restart_still_knows_the_letter_was_replayed() -> anyhow::Result<()>
{
    use std::collections::BTreeMap;
    use waybill::storage::NewMessage;
    use waybill_client::protocol::{PROP_REPLAY_BY, PROP_REPLAY_OF};

    let tmp = tempfile::tempdir()?;
    let store = Arc::new(Store::open(
        Arc::new(RealFs),
        StoreOptions::new(tmp.path(), Flush::Sync),
    )?);
    let opts = BrokerOptions {
        retry: RetryPolicy::with_delays(vec![Duration::from_millis(10)], 0),
        ..BrokerOptions::default()
    };
    let b = Broker::new(store.clone(), opts.clone())?;
    let id = send(&b, "k1").await?;
    b.send_back("g", &id, "boom").await?;
    let letter = b.dead_letters("g")?[0].clone();
    drop(b);
    // What the broker appends first when replaying, and nothing after it.
    let letter_id: waybill::broker::MessageId = letter.id.parse()?;
    let m = store.read(letter_id.pos)?;
    let mut properties: BTreeMap<String, String> = m.properties.clone();
    properties.insert(PROP_REPLAY_OF.into(), letter.id.clone());
    properties.insert(PROP_REPLAY_BY.into(), "alice".into());
    let copy = store.append(NewMessage {
        topic: "%RETRY%g".into(),
        queue_id: opts.retry.replay_queue(),
        key: m.key.clone(),
        tags: None,
        producer: None,
        properties,
        body: m.body.clone(),
        born_ms: m.born_ms,
    })?;
    // Durable, as the broker's own append of the copy is before it goes on.
    anyhow::ensure!(
        store.wait_flushed(copy.end, Duration::from_secs(5)).await == waybill::storage::FlushOutcome::Flushed,
        "the copy was not fsynced"
    );

    let b = Broker::new(store.clone(), opts)?;
    let letters = b.dead_letters("g")?;
    assert_eq!(letters[0].state, "replayed");
    assert_eq!(letters[0].replays.len(), 1);
    assert_eq!(letters[0].replays[0].by, "alice");
    let copy_id = waybill::broker::MessageId {
        node: copy.node,
        epoch: copy.epoch,
        pos: copy.pos,
    }
    .to_string();
    assert_eq!(letters[0].replays[0].new_id, copy_id);
    match b.replay(&letter.id, "bob", false).await {
        Err(BrokerError::Conflict(msg)) => assert!(msg.contains(&copy_id), "{msg}"),
        other => panic!("expected a conflict naming {copy_id}, got {other:?}"),
    }
    Ok(())
}
