//! Fuzzes the client protocol's frame decoder: header parsing, checksum and
//! request/response payload decoding must reject any input without
//! panicking, and anything that decodes must re-encode to the same bytes.
//! Run: `cargo fuzz run frame` (from the repository root).
#![no_main]

use libfuzzer_sys::fuzz_target;
use waybill_client::protocol::{Request, Response};
use waybill_client::wire::{Header, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    // As a whole frame.
    if data.len() >= HEADER_LEN {
        let mut head = [0u8; HEADER_LEN];
        head.copy_from_slice(&data[..HEADER_LEN]);
        if let Ok(h) = Header::parse(&head) {
            let payload = &data[HEADER_LEN..];
            if payload.len() >= h.len && h.verify(&payload[..h.len]).is_ok() {
                let _ = Request::decode(h.kind, &payload[..h.len]);
                let _ = Response::decode(h.kind, &payload[..h.len]);
            }
        }
    }
    // As a bare payload of every kind: decode, and round-trip what decodes.
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(req) = Request::decode(kind, payload) {
            let (k, bytes) = req.encode();
            assert_eq!((k, bytes.as_slice()), (kind, payload));
        }
        if let Ok(resp) = Response::decode(kind, payload) {
            let (k, bytes) = resp.encode();
            assert_eq!((k, bytes.as_slice()), (kind, payload));
        }
    }
});
