//! The alphabet of a token's parts, `[A-Za-z0-9_-]`, checked eight bytes at a time: the
//! request hot path reads every byte of every token presented.

/// A byte of ones in each lane.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of each lane.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each lane of `x` whose byte is in `lo..=hi` (`hi < 0x80`). Lanes of
/// bytes at or above 0x80 may carry into the next lane: callers treat any such byte as
/// a failure of the whole word, so what its neighbours say does not matter.
const fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let at_least_lo = x.wrapping_add(ONES * (0x80 - lo as u64));
    let above_hi = x.wrapping_add(ONES * (0x7f - hi as u64));
    at_least_lo & !above_hi & HIGH
}

/// The high bit of each lane of `x` that is a part byte.
const fn part_lanes(x: u64) -> u64 {
    // `| 0x20` folds A-Z onto a-z and moves no other byte into a-z.
    let letters = in_range(x | (ONES * 0x20), b'a', b'z');
    let digits = in_range(x, b'0', b'9');
    let marks = in_range(x, b'_', b'_') | in_range(x, b'-', b'-');
    (letters | digits | marks) & !x & HIGH
}

/// The high bit of each lane of `x` that is a dot.
const fn dot_lanes(x: u64) -> u64 {
    in_range(x, b'.', b'.') & !x & HIGH
}

fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().expect("chunks of eight"))
}

/// Whether `b` is a part byte: one table lookup.
pub(super) fn is_part_byte(b: u8) -> bool {
    PART_BYTES[usize::from(b)]
}

/// [`is_part_byte`]'s table.
static PART_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        b += 1;
    }
    table
};

/// Whether every byte of `bytes` is a part byte.
pub(super) fn all_part_bytes(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if part_lanes(word(chunk)) != HIGH {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| is_part_byte(b))
}

/// Where the one dot of `bytes` is, every other byte being a part byte; `None` if there
/// is no dot, more than one, or another byte.
pub(super) fn single_dot(bytes: &[u8]) -> Option<usize> {
    let mut dot = None;
    let mut chunks = bytes.chunks_exact(8);
    for (n, chunk) in (&mut chunks).enumerate() {
        let x = word(chunk);
        let dots = dot_lanes(x);
        if part_lanes(x) | dots != HIGH {
            return None;
        }
        if dots != 0 {
            if dot.is_some() || dots.count_ones() != 1 {
                return None;
            }
            dot = Some(n * 8 + dots.trailing_zeros() as usize / 8);
        }
    }
    let start = bytes.len() - chunks.remainder().len();
    for (i, &b) in chunks.remainder().iter().enumerate() {
        if b == b'.' && dot.is_none() {
            dot = Some(start + i);
        } else if !is_part_byte(b) {
            return None;
        }
    }
    dot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_part(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    }

    fn naive_single_dot(bytes: &[u8]) -> Option<usize> {
        let dots: Vec<usize> = (0..bytes.len()).filter(|&i| bytes[i] == b'.').collect();
        let others_ok = bytes.iter().all(|&b| b == b'.' || naive_part(b));
        (dots.len() == 1 && others_ok).then(|| dots[0])
    }

    #[test]
    fn every_byte_in_every_lane_is_judged_as_the_table_does() {
        for lane in 0..8 {
            for b in 0..=255_u8 {
                // A valid word around the byte under test, and a tail after it.
                let mut bytes = *b"aZ09_-xYq";
                bytes[lane] = b;
                assert_eq!(
                    all_part_bytes(&bytes),
                    naive_part(b),
                    "{b:#x} in lane {lane}"
                );
                assert_eq!(
                    single_dot(&bytes),
                    naive_single_dot(&bytes),
                    "{b:#x} in lane {lane}"
                );
            }
        }
        for b in 0..=255_u8 {
            assert_eq!(is_part_byte(b), naive_part(b), "{b:#x}");
        }
    }

    #[test]
    fn dots_are_found_and_counted_across_words() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'k'; len];
                bytes[at] = b'.';
                assert_eq!(single_dot(&bytes), Some(at), "{len} {at}");
                for second in 0..len {
                    if second != at {
                        let mut two = bytes.clone();
                        two[second] = b'.';
                        assert_eq!(single_dot(&two), None, "{len} {at} {second}");
                    }
                }
            }
            assert_eq!(single_dot(&vec![b'k'; len]), None);
            assert!(all_part_bytes(&vec![b'k'; len]));
        }
        // A high byte's carry must not make a neighbour pass.
        assert!(!all_part_bytes(b"\xff.aaaaaa"));
        assert_eq!(single_dot(b"a\xffaaaaaa.b"), None);
    }
}
