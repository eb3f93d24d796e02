//! Size classes: which block size serves a request, and what page kind holds it.
//!
//! Classes are multiples of 8 up to 128 bytes, then 4 per power of two up to
//! [`MAX_CLASS_SIZE`] (160, 192, 224, 256, 320, ... 1 MiB), as mimalloc's
//! and jemalloc's, plus one *header class* just past each power of two from
//! 1 KiB to 4 KiB: 1,088, 2,176 and 4,352 bytes (the power of two and a
//! sixteenth). Above 128 bytes a request wastes at most 1/5 (20%) of its
//! block, about 10% on average over evenly spread sizes. Four classes per
//! doubling rather than eight halve the pages a heap holds partly carved
//! (at least one per class in use), and on the programs of
//! `benches/programs` those pages cost more resident memory than the
//! coarser rounding does: with eight, peak RSS was 61 MiB on `mix` (now 56)
//! and 9.0 MiB on `perthread` (8.3). The header classes take what that
//! costs the most common sizes back: a power of two and a small header (a
//! 1 KiB buffer in a struct, redis's 1 KiB values with their `sds` header,
//! 1,028 bytes) took 1,280 bytes, a quarter more; now 1,088. Every class
//! size is a multiple of 8; aligned requests search for a class that is a
//! multiple of their alignment ([`class_for_aligned`]).

/// log2 of the classes per power of two above 128 bytes.
const STEPS_LOG: usize = 2;
/// Classes per power of two above 128 bytes.
const STEPS: usize = 1 << STEPS_LOG;

/// log2 of the first and last powers of two followed by a header class
/// (1 KiB and 4 KiB).
const HEADER_FROM: usize = 10;
const HEADER_TO: usize = 12;
/// The number of header classes.
const HEADERS: usize = HEADER_TO + 1 - HEADER_FROM;

/// Number of size classes: 16 up to 128 bytes, then [`STEPS`] for each of
/// the 13 powers of two up to 1 MiB, and the [`HEADERS`] header classes.
pub const CLASSES: usize = 16 + 13 * STEPS + HEADERS;

/// The largest block a class serves; bigger requests are huge blocks.
pub const MAX_CLASS_SIZE: usize = 1 << 20;

/// Largest block size kept in 64 KiB small pages.
pub const MAX_SMALL: usize = 8 << 10;

/// Largest block size kept in 128 KiB medium pages.
pub const MAX_MEDIUM: usize = 128 << 10;

const TABLE_MAX: usize = 1024;

/// Class index for sizes up to 1 KiB, indexed by `(size + 7) / 8`.
static SMALL_TABLE: [u8; TABLE_MAX / 8 + 1] = {
    let mut t = [0u8; TABLE_MAX / 8 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = if i == 0 { 1 } else { i * 8 };
        t[i] = class_of_computed(size) as u8;
        i += 1;
    }
    t
};

/// Class index for C's `malloc` up to 1 KiB, indexed like `SMALL_TABLE`:
/// sizes above 8 bytes get a class that is a multiple of 16, so that every
/// such block is 16-aligned as glibc's are.
static C_TABLE: [u8; TABLE_MAX / 8 + 1] = {
    let mut t = [0u8; TABLE_MAX / 8 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = if i <= 1 { 8 } else { (i * 8).next_multiple_of(16) };
        t[i] = class_of_computed(size) as u8;
        i += 1;
    }
    t
};

/// Entries of a heap's C direct table (`Heap::direct_c`): one per 8 bytes
/// of request up to 1 KiB, indexed by `(size + 7) / 8`.
pub const C_WORDS: usize = TABLE_MAX / 8 + 1;

/// The C direct-table entries that hold each class's page, `start..end`
/// (empty for classes above 1 KiB and for the classes C never uses): the
/// classes of `C_TABLE` are non-decreasing, so each one's entries are a run.
static C_WORDS_OF: [(u8, u8); CLASSES] = {
    let mut t = [(0u8, 0u8); CLASSES];
    let mut w = 0;
    while w < C_WORDS {
        let c = C_TABLE[w] as usize;
        if t[c].1 == 0 {
            t[c].0 = w as u8;
        }
        t[c].1 = w as u8 + 1;
        w += 1;
    }
    t
};

/// The C direct-table entries of `class` (see [`C_WORDS`]).
#[inline]
pub fn c_words_of(class: usize) -> core::ops::Range<usize> {
    let (start, end) = C_WORDS_OF[class];
    start as usize..end as usize
}

/// Block size of every class.
static SIZES: [u32; CLASSES] = {
    let mut t = [0u32; CLASSES];
    let mut c = 0;
    while c < CLASSES {
        t[c] = size_of_computed(c) as u32;
        c += 1;
    }
    t
};

const fn class_of_computed(size: usize) -> usize {
    // The free mark of `double-free-check` is a block's second word.
    let size = if cfg!(feature = "double-free-check") && size < 16 { 16 } else { size };
    if size <= 128 {
        return if size == 0 { 0 } else { size.div_ceil(8) - 1 };
    }
    let s = size - 1;
    let b = (usize::BITS - 1 - s.leading_zeros()) as usize; // size in (2^b, 2^(b+1)]
    let first = first_of_doubling(b);
    if has_header_class(b) {
        if size <= header_size(b) {
            return first;
        }
        return first + 1 + ((s >> (b - STEPS_LOG)) & (STEPS - 1));
    }
    first + ((s >> (b - STEPS_LOG)) & (STEPS - 1))
}

/// Whether the sizes in `(2^b, 2^(b+1)]` start with a header class.
const fn has_header_class(b: usize) -> bool {
    b >= HEADER_FROM && b <= HEADER_TO
}

/// The header class's block size past `2^b`: the power of two and a
/// sixteenth of it.
const fn header_size(b: usize) -> usize {
    (1 << b) + (1 << (b - 4))
}

/// The first class of the sizes in `(2^b, 2^(b+1)]`, `b >= 7`.
const fn first_of_doubling(b: usize) -> usize {
    let headers_before = if b <= HEADER_FROM {
        0
    } else if b > HEADER_TO {
        HEADERS
    } else {
        b - HEADER_FROM
    };
    16 + (b - 7) * STEPS + headers_before
}

const fn size_of_computed(class: usize) -> usize {
    if class < 16 {
        return (class + 1) * 8;
    }
    // The doubling `class` is in: the last whose first class is at most it.
    let mut b = 7;
    while b < 19 && first_of_doubling(b + 1) <= class {
        b += 1;
    }
    let mut step = class - first_of_doubling(b);
    if has_header_class(b) {
        if step == 0 {
            return header_size(b);
        }
        step -= 1;
    }
    (1usize << b) + (step + 1) * (1usize << (b - STEPS_LOG))
}

/// Largest size [`MID_TABLE`] covers: the header classes end below it.
const MID_MAX: usize = 8 << 10;

/// Class index for sizes from 1 KiB to 8 KiB, indexed by `(size + 63) /
/// 64` (every class there is a multiple of 64): one load where the header
/// classes would otherwise cost a computation of a dozen instructions
/// more per `malloc` (callgrind, malloc+free at 8 KiB: 68 -> 89).
static MID_TABLE: [u8; MID_MAX / 64 + 1] = {
    let mut t = [0u8; MID_MAX / 64 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = class_of_computed(if i == 0 { 1 } else { i * 64 }) as u8;
        i += 1;
    }
    t
};

/// The class of a request of `size` bytes (`size <= MAX_CLASS_SIZE`).
/// One table load for sizes up to 8 KiB.
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    if size <= TABLE_MAX {
        // Indexing stays in bounds: (1024 + 7) / 8 = 128 < 129.
        SMALL_TABLE[(size + 7) >> 3] as usize
    } else if size <= MID_MAX {
        // In bounds: (8192 + 63) / 64 = 128 < 129.
        MID_TABLE[(size + 63) >> 6] as usize
    } else {
        class_above_mid(size)
    }
}

/// [`class_of_computed`] above [`MID_MAX`], past every header class.
#[inline(always)]
fn class_above_mid(size: usize) -> usize {
    let s = size - 1;
    let b = (usize::BITS - 1 - s.leading_zeros()) as usize;
    16 + (b - 7) * STEPS + HEADERS + ((s >> (b - STEPS_LOG)) & (STEPS - 1))
}

/// The class of a C `malloc` of `size` bytes (`size <= 1024`): 16-aligned
/// above 8 bytes. One table load.
#[inline(always)]
pub fn class_of_c(size: usize) -> usize {
    debug_assert!(size <= TABLE_MAX);
    C_TABLE[(size + 7) >> 3] as usize
}

/// The block size of `class`.
#[inline(always)]
pub fn size_of(class: usize) -> usize {
    SIZES[class] as usize
}

/// The smallest class that holds `size` bytes with blocks aligned to `align`
/// (a power of two no larger than the OS page), or `None` if there is none.
/// Pages start at OS-page boundaries, so a block size that is a multiple of
/// `align` gives aligned blocks.
pub fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    let size = size.checked_add(align - 1)? & !(align - 1);
    if size > MAX_CLASS_SIZE {
        return None;
    }
    (class_of(size)..CLASSES).find(|&c| size_of(c) % align == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_direct_entries_cover_each_c_class_exactly() {
        for (w, &c) in C_TABLE.iter().enumerate() {
            let c = c as usize;
            assert!(c_words_of(c).contains(&w), "word {w} class {c}");
        }
        for c in 0..CLASSES {
            for w in c_words_of(c) {
                assert_eq!(C_TABLE[w] as usize, c, "class {c} word {w}");
            }
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_class_that_holds_it() {
        for size in 1..=MAX_CLASS_SIZE {
            let c = class_of(size);
            assert!(size_of(c) >= size, "size {size} class {c}");
            // With `double-free-check` the 8-byte class is not used.
            let smallest = usize::from(cfg!(feature = "double-free-check"));
            assert!(c >= smallest, "size {size} class {c}");
            assert!(c == smallest || size_of(c - 1) < size, "size {size} class {c}");
        }
    }

    #[test]
    fn the_tables_and_the_fast_formula_agree_with_the_computation() {
        for size in 1..=MAX_CLASS_SIZE {
            assert_eq!(class_of(size), class_of_computed(size), "size {size}");
        }
        const { assert!(HEADER_TO < 13, "a header class past MID_MAX") };
    }

    #[test]
    fn header_classes_follow_1_2_and_4_kib() {
        let block = |size| size_of(class_of(size));
        assert_eq!([block(1025), block(1028), block(1088), block(1089)], [1088, 1088, 1088, 1280]);
        assert_eq!([block(2049), block(2176), block(2177)], [2176, 2176, 2560]);
        assert_eq!([block(4100), block(4352), block(4353)], [4352, 4352, 5120]);
        // None past 512 bytes or 8 KiB.
        assert_eq!([block(513), block(8193)], [640, 10240]);
        assert!((1..CLASSES).all(|c| size_of(c) > size_of(c - 1)), "class sizes not increasing");
    }

    #[test]
    fn waste_above_128_bytes_is_at_most_one_fifth() {
        for size in 129..=MAX_CLASS_SIZE {
            let block = size_of(class_of(size));
            assert!((block - size) * 5 <= block, "size {size} block {block}");
        }
        assert_eq!(size_of(CLASSES - 1), MAX_CLASS_SIZE);
    }

    #[test]
    fn c_classes_are_16_aligned_above_8_bytes() {
        for size in 0..=TABLE_MAX {
            let block = size_of(class_of_c(size));
            assert!(block >= size.max(1));
            assert!(size <= 8 || block % 16 == 0, "size {size} block {block}");
            assert!(block <= (size + 15).max(8) + block / 5, "size {size} block {block}");
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for align in [32, 64, 128, 256, 1024, 4096] {
            for size in (1..70_000).step_by(37) {
                let c = class_for_aligned(size, align).unwrap();
                assert_eq!(size_of(c) % align, 0);
                assert!(size_of(c) >= size);
            }
        }
    }
}
