//! Fuzzes the client protocol's frame decoder (`client/src/wire.rs`,
//! `client/src/protocol.rs`): header parsing, checksum and request/response
//! payload decoding must reject any input without panicking; anything that
//! decodes must re-encode to the same bytes; and decoding holds at most
//! [`BYTES_PER_INPUT_BYTE`] bytes per input byte, so a declared count or
//! length cannot make it reserve memory the frame does not carry.
//! Run: `scripts/fuzz.sh frame SECONDS` (or `cargo fuzz run frame`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use waybill_client::protocol::{Request, Response};
use waybill_client::wire::{Header, HEADER_LEN};
use waybill_fuzz::{measure, Peak};

#[global_allocator]
static ALLOC: Peak = Peak;

/// Most bytes a decode may hold per payload byte: list counts are checked
/// against the bytes left times the smallest encoded item, and a decoded
/// item is a few times larger in memory than its smallest encoding.
const BYTES_PER_INPUT_BYTE: usize = 64;
/// Fixed allowance for the decoded value itself.
const BASE_BYTES: usize = 4096;

fn bounded<T>(what: &str, payload: &[u8], decode: impl FnOnce() -> T) -> T {
    let (out, held) = measure(decode);
    let bound = BASE_BYTES + BYTES_PER_INPUT_BYTE * payload.len();
    assert!(
        held <= bound,
        "{what}: decoding {} bytes held {held} (bound {bound})",
        payload.len()
    );
    out
}

fuzz_target!(|data: &[u8]| {
    // As a whole frame.
    if data.len() >= HEADER_LEN {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&data[..HEADER_LEN]);
        if let Ok(h) = Header::parse(&head) {
            let payload = &data[HEADER_LEN..];
            if payload.len() >= h.len && h.verify(&payload[..h.len]).is_ok() {
                let body = &payload[..h.len];
                let _ = bounded("request", body, || Request::decode(h.kind, body));
                let _ = bounded("response", body, || Response::decode(h.kind, body));
            }
        }
    }
    // As a bare payload of every kind: decode, and round-trip what decodes.
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(req) = bounded("request", payload, || Request::decode(kind, payload)) {
            let (k, bytes) = req.encode();
            assert_eq!((k, bytes.as_slice()), (kind, payload));
        }
        if let Ok(resp) = bounded("response", payload, || Response::decode(kind, payload)) {
            let (k, bytes) = resp.encode();
            assert_eq!((k, bytes.as_slice()), (kind, payload));
        }
    }
});
