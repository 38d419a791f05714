//! LEB128 varints: the compact encoding of run entries and of the handler
//! latencies a commit carries. `get` refuses a varint longer than ten bytes
//! or cut short, so damaged bytes decode as `None`, never as garbage.

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
}
