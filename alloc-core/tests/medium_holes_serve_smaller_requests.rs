//! With no memory line in force, a medium request whose own class has no
//! free block takes a free block of one of the next two classes (a hole
//! left in a page still in use) rather than carving a new one. The test
//! runs as a child with the cgroup off: a line derived from the test
//! machine's cgroup would turn borrowing off.

mod common;

use std::alloc::{alloc, dealloc, Layout};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const KIB: usize = 1 << 10;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

const CHILD: &str = "SHRINKALLOC_TEST_MEDIUM_HOLES_CHILD";

#[test]
fn a_hole_of_the_next_class_serves_a_medium_request() {
    if !common::in_child_without_line(CHILD, "a_hole_of_the_next_class_serves_a_medium_request", &[], "HOLES OK") {
        return;
    }
    // A thread of its own: a heap with nothing of these classes yet.
    std::thread::spawn(|| {
        // Three 48 KiB blocks (two to a 128 KiB medium page): free the
        // first, leaving a hole in a page still in use.
        // SAFETY: non-zero sizes.
        let big: Vec<*mut u8> = (0..3).map(|_| unsafe { alloc(layout(48 * KIB)) }).collect();
        assert!(big.iter().all(|p| !p.is_null()));
        // SAFETY: live with this layout, freed once.
        unsafe { dealloc(big[0], layout(48 * KIB)) };
        // 40 KiB: its class has no page yet, so the hole serves it.
        // SAFETY: a non-zero size.
        let small = unsafe { alloc(layout(40 * KIB)) };
        assert_eq!(small, big[0], "the 48 KiB hole did not serve the 40 KiB request");
        // SAFETY: `small` holds at least 40 KiB; malloc_usable_size says
        // what the block really is.
        assert!(unsafe { shrinkalloc::raw::usable_size(small) } >= 48 * KIB);
        // SAFETY: live blocks, each freed once.
        unsafe {
            dealloc(small, layout(40 * KIB));
            dealloc(big[1], layout(48 * KIB));
            dealloc(big[2], layout(48 * KIB));
        }
        shrinkalloc::check::check_thread_heap().unwrap();
    })
    .join()
    .unwrap();
    println!("HOLES OK");
}
