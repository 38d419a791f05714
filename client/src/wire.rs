//! Frame layer of the client protocol: header, checksum, primitive codecs.
//!
//! Every frame is `header | payload`:
//! ```text
//! magic u16 ("WB") | version u8 | kind u8 | request_id u64 | len u32 | crc32c u32
//! ```
//! little endian, 20 bytes, then `len` payload bytes whose CRC32C is `crc32c`.
//! A peer rejects a frame with a wrong magic or version, a length over
//! [`MAX_FRAME`], a bad CRC or a payload that does not decode exactly; the
//! connection is then closed, because after one bad frame the byte stream
//! can no longer be trusted to be aligned on frame boundaries.

/// "WB" as a little-endian u16.
pub const MAGIC: u16 = 0x4257;
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 20;
/// Largest payload a peer accepts (a produce batch of many messages).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why bytes are not a valid frame or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad frame magic {0:#06x}")]
    Magic(u16),
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame checksum mismatch")]
    Crc,
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("malformed payload: {0}")]
    Payload(&'static str),
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub request_id: u64,
    pub len: usize,
    pub crc: u32,
}

impl Header {
    /// Parses and validates a header (not the payload).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
        let magic = u16::from_le_bytes([b[0], b[1]]);
        if magic != MAGIC {
            return Err(WireError::Magic(magic));
        }
        if b[2] != VERSION {
            return Err(WireError::Version(b[2]));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[4..12]);
        let len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        Ok(Header {
            kind: b[3],
            request_id: u64::from_le_bytes(id),
            len,
            crc: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        })
    }

    /// Checks the payload against the header's CRC.
    pub fn verify(&self, payload: &[u8]) -> Result<(), WireError> {
        if crc32c::crc32c(payload) != self.crc {
            return Err(WireError::Crc);
        }
        Ok(())
    }
}

/// Builds a complete frame around `payload`.
pub fn frame(kind: u8, request_id: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads a `len`-byte payload that a header announced, growing the buffer
/// as bytes arrive: a peer that claims [`MAX_FRAME`] bytes and sends few
/// costs few bytes of memory, not the claimed length. `UnexpectedEof` when
/// the stream ends first.
pub async fn read_payload<R: tokio::io::AsyncRead + Unpin>(rd: &mut R, len: usize) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut payload = Vec::with_capacity(len.min(PAYLOAD_START));
    rd.take(len as u64).read_to_end(&mut payload).await?;
    if payload.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(payload)
}

/// Buffer reserved up front for a payload; beyond it, it grows with what
/// arrives.
const PAYLOAD_START: usize = 64 * 1024;

/// Appends primitives to a payload.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(s) => self.u8(1).str(s),
            None => self.u8(0),
        }
    }
}

/// Reads primitives from a payload; never panics on short or bad input.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Payload("length overflow"))?;
        let s = self.buf.get(self.at..end).ok_or(WireError::Payload("truncated"))?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Payload("bad boolean")),
        }
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    pub fn str(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?).map_err(|_| WireError::Payload("invalid UTF-8"))
    }
    pub fn opt_str(&mut self) -> Result<Option<String>, WireError> {
        if self.bool()? {
            Ok(Some(self.str()?))
        } else {
            Ok(None)
        }
    }
    /// A count of items that each take at least `min_item` bytes; bounds
    /// allocations by what the payload can really hold.
    pub fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() - self.at {
            return Err(WireError::Payload("count exceeds payload"));
        }
        Ok(n)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(WireError::Payload("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let f = frame(3, 99, b"payload");
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&f[..HEADER_LEN]);
        let parsed = Header::parse(&h).expect("valid header");
        assert_eq!((parsed.kind, parsed.request_id, parsed.len), (3, 99, 7));
        assert!(parsed.verify(&f[HEADER_LEN..]).is_ok());
        assert_eq!(parsed.verify(b"payloaX"), Err(WireError::Crc));
        let mut bad = h;
        bad[2] = 9;
        assert_eq!(Header::parse(&bad), Err(WireError::Version(9)));
        let mut big = h;
        big[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Header::parse(&big), Err(WireError::TooLarge(_))));
    }

    #[tokio::test]
    async fn a_payload_is_read_as_it_arrives_and_a_short_one_fails() {
        let mut src: &[u8] = b"abcdef";
        assert_eq!(read_payload(&mut src, 4).await.ok(), Some(b"abcd".to_vec()));
        let mut short: &[u8] = b"ab";
        let e = read_payload(&mut short, MAX_FRAME).await.err().map(|e| e.kind());
        assert_eq!(e, Some(std::io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn reader_refuses_short_and_oversized_counts() {
        let mut r = Reader::new(&[5, 0, 0, 0, 1]);
        assert!(r.bytes().is_err());
        let mut r = Reader::new(&[255, 255, 255, 255]);
        assert!(r.count(1).is_err());
    }
}
