//! A class whose first page ran dry takes the blocks freed on its other
//! pages before it carves memory it never used; and, with no memory line
//! in force, a class of blocks above 1 KiB with no free block of its own
//! takes a free block (a hole in a page all carved) of one of the next two
//! classes rather than carving, where classes of 1 KiB and less do not.

use std::alloc::{alloc, dealloc, Layout};
use std::collections::HashSet;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn take(size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { alloc(layout(size)) };
    assert!(!p.is_null());
    p
}

fn give(p: *mut u8, size: usize) {
    // SAFETY: the callers pass live blocks of this size, each once.
    unsafe { dealloc(p, layout(size)) };
}

#[test]
fn freed_blocks_come_before_carving() {
    // A thread of its own: a heap with nothing of this class yet.
    std::thread::spawn(|| {
        const SIZE: usize = 256;
        // 808 blocks of 256 B: three 64 KiB pages used up and a fourth
        // that has carved 8 KiB twice, with most of it still to carve.
        let blocks: Vec<*mut u8> = (0..808).map(|_| take(SIZE)).collect();
        // Free 100 of the oldest pages' blocks.
        let freed: HashSet<usize> = blocks[..100].iter().map(|&p| p as usize).collect();
        for &p in &blocks[..100] {
            give(p, SIZE);
        }
        // The last page's carved blocks go first (at most 32: one 8 KiB
        // carving), then the freed ones, not new carvings.
        let again: Vec<*mut u8> = (0..100).map(|_| take(SIZE)).collect();
        let reused = again.iter().filter(|&&p| freed.contains(&(p as usize))).count();
        assert!(reused >= 100 - 32, "only {reused} of 100 blocks came from the 100 freed; the rest was carved anew");
        for &p in blocks[100..].iter().chain(&again) {
            give(p, SIZE);
        }
        shrinkalloc::check::check_thread_heap().unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn classes_above_1_kib_borrow_and_smaller_ones_do_not() {
    std::thread::spawn(|| {
        // Blocks carved but never handed out are their own class's: two
        // 1,800 B blocks (the 2,048 B class, four carved), one freed, and
        // a 1,500 B request (the 1,536 B class) gets a block of its own.
        let fresh = [take(1800), take(1800)];
        give(fresh[0], 1800);
        let f = take(1500);
        // SAFETY: a live block of ours.
        let got = unsafe { shrinkalloc::raw::usable_size(f) };
        assert_eq!(got, 1536, "a 1,500 B request borrowed from a page still carving");
        give(f, 1500);
        give(fresh[1], 1800);

        // 1,700 B takes the 1,792 B class: 80 blocks fill two pages and
        // more (36 to a 64 KiB page); free one of the first page, all
        // carved: a hole.
        let big: Vec<*mut u8> = (0..80).map(|_| take(1700)).collect();
        give(big[0], 1700);
        // 1,200 B (the 1,280 B class, no page of it yet; the 1,536 B class
        // next to it has none either): a free 1,792 B block serves.
        let p = take(1200);
        // SAFETY: a live block of ours.
        let got = unsafe { shrinkalloc::raw::usable_size(p) };
        assert_eq!(got, 1792, "a 1,200 B request got a {got} B block, not a free 1,792 B one");
        give(p, 1200);
        for &b in &big[1..] {
            give(b, 1700);
        }

        // 1,050 B takes the 1,088 B class; 1,000 B (the 1,024 B class)
        // never borrows its free block.
        let over = [take(1050), take(1050)];
        give(over[0], 1050);
        let q = take(1000);
        assert_ne!(q, over[0], "a 1,000 B request borrowed a 1,088 B block");
        // SAFETY: a live block of ours.
        assert_eq!(unsafe { shrinkalloc::raw::usable_size(q) }, 1024);
        give(q, 1000);
        give(over[1], 1050);
        shrinkalloc::check::check_thread_heap().unwrap();
    })
    .join()
    .unwrap();
}
