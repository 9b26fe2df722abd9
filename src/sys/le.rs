//! Little-endian fields read out of a byte buffer: the one reader every on-disk codec uses
//! (slots, file and segment headers, meta copies, journal records).
//!
//! Owns: nothing but the byte order. Must never: panic: a field that does not lie inside the
//! buffer reads as 0 (every caller reads fields of a buffer whose length it checked first).

/// The `u32` at `at`.
#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    at.checked_add(4)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The `u64` at `at`.
#[inline]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    at.checked_add(8)
        .and_then(|end| b.get(at..end))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_little_endian_and_zero_past_the_end() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u32_at(&b, 0), 0x0403_0201);
        assert_eq!(u32_at(&b, 5), 0x0908_0706);
        assert_eq!(u64_at(&b, 1), 0x0908_0706_0504_0302);
        assert_eq!(u32_at(&b, 6), 0);
        assert_eq!(u64_at(&b, 2), 0);
        assert_eq!(u64_at(&b, usize::MAX - 3), 0);
        assert_eq!(u32_at(&b, usize::MAX - 1), 0);
    }
}
