//! Content stamping: every block a scenario allocates is filled with a
//! pattern derived from a tag, and checked against it before it is read,
//! resized, moved to another thread or freed.
//!
//! Invariant: the pattern is a stream that depends only on the tag and the
//! byte offset (word `i` is `mix(tag, i)`), so a prefix of a stamped block is
//! itself a valid stamped block: after `realloc`, the surviving prefix checks
//! against the same tag. A block of the wrong length fails the check, and so
//! does a block stamped with another tag (a block handed to the wrong owner).

use std::fmt;

/// Where a check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The tag the block should carry.
    pub tag: u64,
    /// Offset of the first wrong byte (the length, when the length is wrong).
    pub offset: usize,
    /// The block's length.
    pub len: usize,
    /// The length it should have had, when that is what was wrong.
    pub expected_len: Option<usize>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.expected_len {
            Some(want) => write!(f, "block with tag {:#x} is {} bytes long, expected {want}", self.tag, self.len),
            None => write!(f, "block with tag {:#x} ({} bytes) differs at byte {}", self.tag, self.len, self.offset),
        }
    }
}

/// The splitmix64 finaliser: a cheap bijective mix of 64 bits.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
fn word(tag: u64, i: usize) -> [u8; 8] {
    mix(tag ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).to_le_bytes()
}

/// Fills `buf` with the pattern of `tag`.
pub fn stamp(buf: &mut [u8], tag: u64) {
    stamp_at(buf, tag, 0);
}

/// Checks that `buf` holds the pattern of `tag`.
pub fn check(buf: &[u8], tag: u64) -> Result<(), Mismatch> {
    check_at(buf, tag, 0)
}

/// Fills `buf` with bytes `at..at + buf.len()` of the pattern of `tag` (a
/// stream whose start [`stamp`] writes), so that a file written and read in
/// pieces of any size, at any offset, is stamped and checked piece by piece.
pub fn stamp_at(buf: &mut [u8], tag: u64, at: usize) {
    let mut done = 0;
    while done < buf.len() {
        let (pos, skip) = (at + done, (at + done) % 8);
        let n = (8 - skip).min(buf.len() - done);
        buf[done..done + n].copy_from_slice(&word(tag, pos / 8)[skip..skip + n]);
        done += n;
    }
}

/// Checks that `buf` holds bytes `at..at + buf.len()` of the pattern of
/// `tag`; a mismatch's offset is within `buf`.
pub fn check_at(buf: &[u8], tag: u64, at: usize) -> Result<(), Mismatch> {
    let mut done = 0;
    while done < buf.len() {
        let (pos, skip) = (at + done, (at + done) % 8);
        let n = (8 - skip).min(buf.len() - done);
        let (got, want) = (&buf[done..done + n], &word(tag, pos / 8)[skip..skip + n]);
        if got != want {
            return Err(Mismatch {
                tag,
                offset: done + first_difference(got, want),
                len: buf.len(),
                expected_len: None,
            });
        }
        done += n;
    }
    Ok(())
}

/// Checks both the length and the pattern of `buf`.
pub fn check_len(buf: &[u8], tag: u64, len: usize) -> Result<(), Mismatch> {
    if buf.len() != len {
        return Err(Mismatch { tag, offset: buf.len().min(len), len: buf.len(), expected_len: Some(len) });
    }
    check(buf, tag)
}

/// The stride of [`stamp_sparse`]: one word per 4 KiB page.
pub const SPARSE_STRIDE: usize = 4096;

/// Stamps one word per [`SPARSE_STRIDE`] bytes of `buf`: touches every page
/// of a big buffer (so it is resident) at a fraction of [`stamp`]'s cost.
pub fn stamp_sparse(buf: &mut [u8], tag: u64) {
    for (i, page) in buf.chunks_mut(SPARSE_STRIDE).enumerate() {
        let n = page.len().min(8);
        page[..n].copy_from_slice(&word(tag, i)[..n]);
    }
}

/// Checks what [`stamp_sparse`] wrote.
pub fn check_sparse(buf: &[u8], tag: u64) -> Result<(), Mismatch> {
    for (i, page) in buf.chunks(SPARSE_STRIDE).enumerate() {
        let n = page.len().min(8);
        if page[..n] != word(tag, i)[..n] {
            return Err(Mismatch { tag, offset: i * SPARSE_STRIDE, len: buf.len(), expected_len: None });
        }
    }
    Ok(())
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0)
}

/// A small, fast, seedable random number generator (xorshift64*), one per
/// thread, so that a run is repeated by its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `stream` of run `seed` (e.g. one per thread).
    pub fn new(seed: u64, stream: u64) -> Self {
        Rng(mix(seed ^ mix(stream)) | 1)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// `true` with probability `percent` / 100.
    #[inline]
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_blocks_check_and_their_prefixes_too() {
        for len in [0, 1, 7, 8, 9, 100, 4096] {
            let mut v = vec![0u8; len];
            stamp(&mut v, 42);
            assert_eq!(check(&v, 42), Ok(()));
            assert_eq!(check_len(&v, 42, len), Ok(()));
            for cut in 0..len.min(20) {
                assert_eq!(check(&v[..cut], 42), Ok(()), "prefix {cut} of {len}");
            }
        }
    }

    #[test]
    fn a_stream_stamped_in_pieces_checks_as_one_and_in_other_pieces() {
        let mut whole = vec![0u8; 1000];
        stamp(&mut whole, 5);
        let mut pieces = vec![0u8; 1000];
        for (from, to) in [(0, 3), (3, 17), (17, 512), (512, 513), (513, 1000)] {
            stamp_at(&mut pieces[from..to], 5, from);
        }
        assert_eq!(pieces, whole);
        assert_eq!(check_at(&whole[101..777], 5, 101), Ok(()));
        assert!(check_at(&whole[101..777], 5, 100).is_err());
    }

    #[test]
    fn a_flipped_byte_a_wrong_tag_or_length_is_caught() {
        let mut v = vec![0u8; 1000];
        stamp(&mut v, 7);
        v[333] ^= 1;
        assert_eq!(check(&v, 7).unwrap_err().offset, 333);
        v[333] ^= 1;
        assert!(check(&v, 8).is_err());
        assert_eq!(check_len(&v, 7, 999).unwrap_err().expected_len, Some(999));
    }

    #[test]
    fn sparse_stamps_check_and_catch_a_changed_page() {
        let mut v = vec![0u8; 3 * SPARSE_STRIDE + 5];
        stamp_sparse(&mut v, 9);
        assert_eq!(check_sparse(&v, 9), Ok(()));
        v[2 * SPARSE_STRIDE + 1] ^= 0x80;
        assert_eq!(check_sparse(&v, 9).unwrap_err().offset, 2 * SPARSE_STRIDE);
    }

    #[test]
    fn rng_is_repeatable_and_in_range() {
        let (mut a, mut b) = (Rng::new(1, 2), Rng::new(1, 2));
        for _ in 0..1000 {
            let x = a.range(10, 20);
            assert_eq!(x, b.range(10, 20));
            assert!((10..=20).contains(&x));
        }
        assert_ne!(Rng::new(1, 2).next_u64(), Rng::new(1, 3).next_u64());
    }
}
