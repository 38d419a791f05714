//! LEB128 varints: the compact encoding of run entries, of the handler
//! latencies a commit carries and of the duplicates its inbox suppressed.
//! `get` refuses a varint longer than ten bytes or cut short, so damaged
//! bytes decode as `None`, never as garbage; a duplicate's text longer than
//! [`MAX_DUPLICATE_TEXT`] or not UTF-8 makes the whole list read as empty.

pub fn put(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn get(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// `(queue offset, handler ms)` pairs, offsets as deltas (commits list
/// them in queue order).
pub fn encode_handled(handled: &[(u64, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(handled.len() * 3);
    let mut prev = 0u64;
    for (offset, ms) in handled {
        put(&mut out, offset.wrapping_sub(prev));
        put(&mut out, u64::from(*ms));
        prev = *offset;
    }
    out
}

/// The handler time recorded for `offset`, if the list has it.
pub fn handled_ms(bytes: &[u8], offset: u64) -> Option<u32> {
    let mut at = 0;
    let mut prev = 0u64;
    while at < bytes.len() {
        let o = prev.wrapping_add(get(bytes, &mut at)?);
        let ms = u32::try_from(get(bytes, &mut at)?).ok()?;
        if o == offset {
            return Some(ms);
        }
        prev = o;
    }
    None
}

/// Longest "first handled as …" text kept per duplicate (bytes; the SDK
/// sends at most `waybill_client::consumer::MAX_REASON`).
pub const MAX_DUPLICATE_TEXT: usize = 1024;

/// `(queue offset, first handled as …)` pairs: offset delta, text length,
/// text. Texts are cut to [`MAX_DUPLICATE_TEXT`] bytes (on a character
/// boundary).
pub fn encode_duplicates(duplicates: &[(u64, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = 0u64;
    for (offset, text) in duplicates {
        let mut end = text.len().min(MAX_DUPLICATE_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        put(&mut out, offset.wrapping_sub(prev));
        put(&mut out, end as u64);
        out.extend_from_slice(&text.as_bytes()[..end]);
        prev = *offset;
    }
    out
}

/// Every pair of an encoded duplicates list; empty when any part of it is
/// damaged (a cut varint or text, an overlong or non-UTF-8 text).
pub fn decode_duplicates(bytes: &[u8]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut prev = 0u64;
    while at < bytes.len() {
        let Some(pair) = next_duplicate(bytes, &mut at, prev) else {
            return Vec::new();
        };
        prev = pair.0;
        out.push(pair);
    }
    out
}

fn next_duplicate(bytes: &[u8], at: &mut usize, prev: u64) -> Option<(u64, String)> {
    let offset = prev.wrapping_add(get(bytes, at)?);
    let len = usize::try_from(get(bytes, at)?).ok()?;
    if len > MAX_DUPLICATE_TEXT {
        return None;
    }
    let text = bytes.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some((offset, String::from_utf8(text.to_vec()).ok()?))
}

/// The "first handled as …" text recorded for `offset`, if the list has it.
pub fn duplicate_of(bytes: &[u8], offset: u64) -> Option<String> {
    decode_duplicates(bytes)
        .into_iter()
        .find(|(o, _)| *o == offset)
        .map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn handled_pairs_round_trip_and_damage_reads_as_none() {
        let b = super::encode_handled(&[(5, 12), (6, 0), (300, 70_000)]);
        assert_eq!(super::handled_ms(&b, 6), Some(0));
        assert_eq!(super::handled_ms(&b, 300), Some(70_000));
        assert_eq!(super::handled_ms(&b, 7), None);
        assert_eq!(super::handled_ms(&b[..b.len() - 1], 300), None);
        assert_eq!(super::handled_ms(&[0xff; 11], 0), None);
    }

    #[test]
    fn duplicate_pairs_round_trip_and_damage_reads_as_nothing() {
        let list = vec![(5, "first handled as a at t".to_string()), (9, "ünï".to_string())];
        let b = super::encode_duplicates(&list);
        assert_eq!(super::decode_duplicates(&b), list);
        assert_eq!(super::duplicate_of(&b, 9).as_deref(), Some("ünï"));
        assert_eq!(super::duplicate_of(&b, 6), None);
        // Cut anywhere, the list reads as nothing (never a panic).
        for cut in 0..b.len() {
            let d = super::decode_duplicates(&b[..cut]);
            assert!(d.is_empty() || d == list[..1], "cut at {cut}: {d:?}");
        }
        assert!(super::decode_duplicates(&[0xff; 11]).is_empty());
        // A length past the bound, or bytes that are not UTF-8.
        assert!(super::decode_duplicates(&[0, 0x81, 0x10, b'x']).is_empty());
        assert!(super::decode_duplicates(&[0, 2, 0xc3, 0x28]).is_empty());
        // Overlong texts are cut on a character boundary.
        let long = "é".repeat(super::MAX_DUPLICATE_TEXT);
        let d = super::decode_duplicates(&super::encode_duplicates(&[(1, long)]));
        assert_eq!(d[0].1.len(), super::MAX_DUPLICATE_TEXT);
    }
}
