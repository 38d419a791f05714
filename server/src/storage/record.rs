//! The on-disk record: one message framed for the commit log.
//!
//! Frame layout (little endian):
//! ```text
//! magic u32 | len u32 | crc32c u32 | payload[len]
//! payload = version u8 | flags u8 | node u16 | epoch u32 | born_ms i64 | stored_ms i64
//!         | queue_id u32 | queue_offset u64 | topic | key? | tags? | producer? | props | body
//! strings = u16 length + UTF-8 bytes; props = u16 count + (u16 k, u32 v) pairs;
//! body = u32 length + bytes
//! ```
//! Invariants: `crc32c` covers exactly the payload; a frame is valid only if
//! magic, length bounds, CRC and version all check out, so a torn or flipped
//! record is never decoded into a message. The magic lets recovery find
//! candidates for the next record after a corrupt one; a candidate is only
//! believed when the consume index proves it (see `recovery.rs`), because a
//! body can contain a whole valid-looking frame.

use std::collections::BTreeMap;

/// Marks the start of every frame ("WBL1").
pub const MAGIC: u32 = 0x314C_4257;
/// Bytes before the payload: magic, length, CRC.
pub const HEADER_LEN: usize = 12;
/// Current payload format version.
pub const VERSION: u8 = 1;
/// Largest payload accepted; bounds what recovery will believe a length field.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The smallest possible frame: header, fixed fields, a one-byte topic, no
/// properties, an empty body. Bounds how many records a byte range can hold.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + 1 + 1 + 2 + 4 + 8 + 8 + 4 + 8 + 2 + 1 + 2 + 4;

const FLAG_KEY: u8 = 1;
const FLAG_TAGS: u8 = 2;
const FLAG_PRODUCER: u8 = 4;

/// A message as the commit log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMessage {
    /// Node that first stored the message (part of its id).
    pub node: u16,
    /// Boot epoch of that node when it stored the message (part of its id).
    pub epoch: u32,
    pub born_ms: i64,
    pub stored_ms: i64,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub producer: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Why bytes at a position are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not enough bytes for a frame ({0} available)")]
    Short(usize),
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    #[error("implausible payload length {0}")]
    Length(u32),
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("malformed payload: {0}")]
    Payload(&'static str),
    #[error("field too long to encode: {0}")]
    TooLong(&'static str),
}

/// Reads the payload length from a header, checking magic and bounds.
pub fn frame_len(header: &[u8]) -> Result<usize, FrameError> {
    if header.len() < HEADER_LEN {
        return Err(FrameError::Short(header.len()));
    }
    let magic = u32_at(header, 0);
    if magic != MAGIC {
        return Err(FrameError::Magic(magic));
    }
    let len = u32_at(header, 4);
    if (len as usize) < 2 || len as usize > MAX_PAYLOAD {
        return Err(FrameError::Length(len));
    }
    Ok(HEADER_LEN + len as usize)
}

/// Validates a complete frame (header + payload) and decodes it.
pub fn decode(frame: &[u8]) -> Result<StoredMessage, FrameError> {
    let total = frame_len(frame)?;
    if frame.len() < total {
        return Err(FrameError::Short(frame.len()));
    }
    let payload = &frame[HEADER_LEN..total];
    let stored = u32_at(frame, 8);
    let computed = crc32c::crc32c(payload);
    if stored != computed {
        return Err(FrameError::Crc { stored, computed });
    }
    decode_payload(payload)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Encodes `msg` as a complete frame.
pub fn encode(msg: &StoredMessage) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64 + msg.body.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // len + crc, filled below
    let mut flags = 0;
    if msg.key.is_some() {
        flags |= FLAG_KEY;
    }
    if msg.tags.is_some() {
        flags |= FLAG_TAGS;
    }
    if msg.producer.is_some() {
        flags |= FLAG_PRODUCER;
    }
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&msg.node.to_le_bytes());
    out.extend_from_slice(&msg.epoch.to_le_bytes());
    out.extend_from_slice(&msg.born_ms.to_le_bytes());
    out.extend_from_slice(&msg.stored_ms.to_le_bytes());
    out.extend_from_slice(&msg.queue_id.to_le_bytes());
    out.extend_from_slice(&msg.queue_offset.to_le_bytes());
    put_str(&mut out, &msg.topic, "topic")?;
    for (field, name) in [(&msg.key, "key"), (&msg.tags, "tags"), (&msg.producer, "producer")] {
        if let Some(v) = field {
            put_str(&mut out, v, name)?;
        }
    }
    let count = u16::try_from(msg.properties.len()).map_err(|_| FrameError::TooLong("properties"))?;
    out.extend_from_slice(&count.to_le_bytes());
    for (k, v) in &msg.properties {
        put_str(&mut out, k, "property name")?;
        let vlen = u32::try_from(v.len()).map_err(|_| FrameError::TooLong("property value"))?;
        out.extend_from_slice(&vlen.to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let blen = u32::try_from(msg.body.len()).map_err(|_| FrameError::TooLong("body"))?;
    out.extend_from_slice(&blen.to_le_bytes());
    out.extend_from_slice(&msg.body);
    let payload_len = out.len() - HEADER_LEN;
    if payload_len > MAX_PAYLOAD {
        return Err(FrameError::TooLong("record"));
    }
    let crc = crc32c::crc32c(&out[HEADER_LEN..]);
    out[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), FrameError> {
    let len = u16::try_from(s.len()).map_err(|_| FrameError::TooLong(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// A cursor over a payload that fails instead of panicking on short input.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.at.checked_add(n).ok_or(FrameError::Payload("overflow"))?;
        let s = self.buf.get(self.at..end).ok_or(FrameError::Payload("truncated"))?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn string(&mut self, len: usize) -> Result<String, FrameError> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| FrameError::Payload("invalid UTF-8"))
    }
    fn short_str(&mut self) -> Result<String, FrameError> {
        let n = self.u16()? as usize;
        self.string(n)
    }
}

fn decode_payload(payload: &[u8]) -> Result<StoredMessage, FrameError> {
    let mut r = Reader { buf: payload, at: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let flags = r.u8()?;
    let mut msg = StoredMessage {
        node: r.u16()?,
        epoch: r.u32()?,
        born_ms: r.i64()?,
        stored_ms: r.i64()?,
        queue_id: r.u32()?,
        queue_offset: r.u64()?,
        topic: r.short_str()?,
        ..StoredMessage::default()
    };
    if flags & FLAG_KEY != 0 {
        msg.key = Some(r.short_str()?);
    }
    if flags & FLAG_TAGS != 0 {
        msg.tags = Some(r.short_str()?);
    }
    if flags & FLAG_PRODUCER != 0 {
        msg.producer = Some(r.short_str()?);
    }
    let count = r.u16()?;
    for _ in 0..count {
        let k = r.short_str()?;
        let vlen = r.u32()? as usize;
        let v = r.string(vlen)?;
        msg.properties.insert(k, v);
    }
    let blen = r.u32()? as usize;
    msg.body = r.take(blen)?.to_vec();
    if r.at != payload.len() {
        return Err(FrameError::Payload("trailing bytes"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredMessage {
        StoredMessage {
            node: 3,
            epoch: 9,
            born_ms: 1_700_000_000_000,
            stored_ms: 1_700_000_000_001,
            topic: "orders".into(),
            queue_id: 2,
            queue_offset: 77,
            key: Some("order-1".into()),
            tags: None,
            producer: Some("p1".into()),
            properties: [("TRACE".to_string(), "x".to_string())].into(),
            body: "héllo".as_bytes().to_vec(),
        }
    }

    #[test]
    fn round_trips() -> Result<(), FrameError> {
        let frame = encode(&sample())?;
        assert_eq!(frame_len(&frame)?, frame.len());
        assert_eq!(decode(&frame)?, sample());
        Ok(())
    }

    #[test]
    fn every_single_byte_flip_is_detected() -> Result<(), FrameError> {
        let frame = encode(&sample())?;
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        Ok(())
    }

    #[test]
    fn the_smallest_frame_is_min_frame_len() -> Result<(), FrameError> {
        let m = StoredMessage {
            topic: "t".into(),
            ..StoredMessage::default()
        };
        assert_eq!(encode(&m)?.len(), MIN_FRAME_LEN);
        Ok(())
    }

    #[test]
    fn every_truncation_is_detected() -> Result<(), FrameError> {
        let frame = encode(&sample())?;
        for n in 0..frame.len() {
            assert!(decode(&frame[..n]).is_err(), "truncation to {n} decoded");
        }
        Ok(())
    }
}
