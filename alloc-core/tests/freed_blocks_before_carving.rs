//! A class whose first page ran dry takes the blocks freed on its other
//! pages before it carves memory it never used; and, with no memory line
//! in force, a class of blocks above 1 KiB with no free block of its own
//! takes a free block (a hole in a page all carved) of one of the next two
//! classes rather than carving, where classes of 1 KiB and less do not.
//! Each test runs as a child with the cgroup off: a line derived from the
//! test machine's cgroup would turn borrowing off.

mod common;

use std::alloc::{alloc, dealloc, Layout};
use std::collections::HashSet;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const CHILD: &str = "SHRINKALLOC_TEST_FREED_FIRST_CHILD";

/// In the parent, runs `test` again as a child with no memory line and
/// checks that it printed `done`; in the child, returns true.
fn in_child(test: &str, done: &str) -> bool {
    common::in_child_without_line(CHILD, test, &[], done)
}

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

fn usable(p: *mut u8) -> usize {
    // SAFETY: the callers pass live blocks of ours.
    unsafe { shrinkalloc::raw::usable_size(p) }
}

/// The size of the block a request of `request` bytes gets while the
/// class of `lender` bytes has a hole in a page all carved: `n` blocks of
/// `lender` (several pages of their class) are taken and the first freed
/// before the request. Frees everything after.
fn size_beside_a_hole(lender: usize, n: usize, request: usize) -> usize {
    let blocks: Vec<*mut u8> = (0..n).map(|_| take(lender)).collect();
    give(blocks[0], lender);
    let p = take(request);
    let got = usable(p);
    give(p, request);
    for &b in &blocks[1..] {
        give(b, lender);
    }
    got
}

#[test]
fn freed_blocks_come_before_carving() {
    if !in_child("freed_blocks_come_before_carving", "FREED FIRST OK") {
        return;
    }
    // A thread of its own: a heap with nothing of this class yet.
    std::thread::spawn(|| {
        const SIZE: usize = 256;
        // 808 blocks of 256 B: three 64 KiB pages used up and a fourth
        // that has carved 8 KiB twice, with most of it still to carve.
        let blocks: Vec<*mut u8> = (0..808).map(|_| take(SIZE)).collect();
        // Free 100 of the oldest pages' blocks (more than 16 on a page).
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
    println!("FREED FIRST OK");
}

#[test]
fn classes_above_1_kib_borrow_holes_and_smaller_ones_do_not() {
    if !in_child("classes_above_1_kib_borrow_holes_and_smaller_ones_do_not", "BORROW OK") {
        return;
    }
    std::thread::spawn(|| {
        // Blocks carved but never handed out are their own class's: two
        // 1,800 B blocks (the 2,048 B class, four carved), one freed, and
        // a 1,500 B request (the 1,536 B class) gets a block of its own.
        let fresh = [take(1800), take(1800)];
        give(fresh[0], 1800);
        let f = take(1500);
        let got = usable(f);
        assert_eq!(got, 1536, "a 1,500 B request borrowed from a page still carving");
        give(f, 1500);
        give(fresh[1], 1800);

        // A hole in full pages of the 1,792 B class (36 to a 64 KiB page)
        // serves 1,200 B (the 1,280 B class, no page of it yet; the 1,536 B
        // class next to it has none either).
        let got = size_beside_a_hole(1700, 80, 1200);
        assert_eq!(got, 1792, "a 1,200 B request got a {got} B block, not the 1,792 B hole");

        // A hole in full pages of the 1,024 B class (64 to a page) does not
        // serve 700 B (the 768 B class, whose blocks the 1,024 B ones are
        // aligned for): classes of 1 KiB and less carve their own.
        let got = size_beside_a_hole(1000, 160, 700);
        assert_eq!(got, 768, "a 700 B request borrowed a {got} B block");
        shrinkalloc::check::check_thread_heap().unwrap();
    })
    .join()
    .unwrap();
    println!("BORROW OK");
}
