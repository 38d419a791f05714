//! Fuzzes the commit log's record codec (`server/src/storage/record.rs`).
//!
//! The first input byte picks what the rest is:
//! - 0: bytes as they lie on disk. Decoding never panics, holds at most
//!   [`BYTES_PER_INPUT_BYTE`] bytes per input byte (a length field cannot
//!   make it reserve more than is there), and what decodes re-encodes to a
//!   frame that decodes to the same message.
//! - 1: a payload sealed under a valid header (magic, length, CRC), so the
//!   fuzzer reaches every payload path without forging CRC32C; the same
//!   properties, and one changed byte anywhere outside the length field is
//!   always refused.
//! - 2: a message built from the bytes: `decode(encode(m)) == m`.
//!
//! Run: `scripts/fuzz.sh record SECONDS` (or `cargo fuzz run record`).
#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use waybill::storage::record::{self, StoredMessage, HEADER_LEN, MAGIC, MAX_PAYLOAD};
use waybill_fuzz::{measure, Peak};

#[global_allocator]
static ALLOC: Peak = Peak;

/// Most bytes a decode may hold per byte of its input: each string and the
/// body are copied once, and each distinct property (7 bytes at least on
/// disk) costs a slot of about 100 bytes in a B-tree node that sorted
/// inserts leave half full. Linear in what is present, whatever the
/// lengths declare.
const BYTES_PER_INPUT_BYTE: usize = 32;
/// Fixed allowance: the message struct and an empty map's first node.
const BASE_BYTES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            check_decode(rest);
        }
        1 => sealed(rest),
        _ => round_trip(rest),
    }
});

/// Decodes `frame`, checking the allocation bound and re-encoding.
fn check_decode(frame: &[u8]) -> Option<StoredMessage> {
    let (decoded, held) = measure(|| record::decode(frame));
    let bound = BASE_BYTES + BYTES_PER_INPUT_BYTE * frame.len();
    assert!(
        held <= bound,
        "decoding {} bytes held {held} (bound {bound})",
        frame.len()
    );
    let msg = decoded.ok()?;
    let total = record::frame_len(frame).expect("a decoded frame has a valid header");
    assert!(total <= frame.len(), "decoded past the input");
    let again = record::encode(&msg).expect("a decoded message re-encodes");
    assert!(again.len() <= total, "re-encoding grew: {} > {total}", again.len());
    assert_eq!(record::decode(&again).as_ref(), Ok(&msg));
    Some(msg)
}

/// `payload` under a header that checks out, then one byte changed.
fn sealed(payload: &[u8]) {
    if payload.len() < 2 || payload.len() > MAX_PAYLOAD {
        return;
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    if check_decode(&frame).is_none() {
        return;
    }
    // CRC32C catches every burst of up to 32 bits in the payload; the magic
    // and the CRC field are compared exactly. (A changed length field can,
    // with odds of 2^-32, describe a shorter frame that checks out: left out.)
    let at = usize::from(payload[0]) * 257 % frame.len();
    if (4..8).contains(&at) {
        return;
    }
    frame[at] ^= payload[payload.len() - 1] | 1;
    assert!(record::decode(&frame).is_err(), "a change at byte {at} went unnoticed");
}

/// A message built from the bytes survives encode then decode unchanged.
fn round_trip(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    let Ok(msg) = arbitrary_message(&mut u) else {
        return;
    };
    // Fuzz inputs are far below the u16 string and 16 MiB record limits.
    let frame = record::encode(&msg).expect("a small message encodes");
    assert_eq!(record::frame_len(&frame), Ok(frame.len()));
    assert_eq!(record::decode(&frame).as_ref(), Ok(&msg));
}

fn arbitrary_message(u: &mut Unstructured<'_>) -> libfuzzer_sys::arbitrary::Result<StoredMessage> {
    Ok(StoredMessage {
        node: u.arbitrary()?,
        epoch: u.arbitrary()?,
        born_ms: u.arbitrary()?,
        stored_ms: u.arbitrary()?,
        topic: u.arbitrary()?,
        queue_id: u.arbitrary()?,
        queue_offset: u.arbitrary()?,
        key: u.arbitrary()?,
        tags: u.arbitrary()?,
        producer: u.arbitrary()?,
        properties: u.arbitrary()?,
        body: Vec::<u8>::arbitrary_take_rest(Unstructured::new(u.bytes(u.len())?))?,
    })
}
