//! Under Miri and as an ordinary test: a page emptied by another thread
//! while its owner sleeps (`Page::empty_remote`). The owner fills pages of
//! 512-byte blocks and blocks on a channel; this thread frees every block
//! (each a free from another thread) and purges, which gives the owner's
//! full pages back and marks them; the owner wakes, collects, starts the
//! pages over and allocates from them again. Miri sees every access of
//! both threads to the blocks, the page records and the lists (its data
//! race detector included). (Raw API: see `miri_random_ops.rs` for why.)

use std::sync::mpsc;

use shrinkalloc::raw;

/// Block size: 128 to a 64 KiB page.
const SIZE: usize = 512;
/// Two pages and a little: the first two are full when the owner stops.
const BLOCKS: usize = 2 * 128 + 8;

/// A block address that may cross threads.
#[derive(Clone, Copy)]
struct Addr(usize);

/// `BLOCKS` blocks, each starting with its tag.
fn allocate(tag: u64) -> Vec<Addr> {
    (0..BLOCKS as u64)
        .map(|i| {
            let p = raw::malloc(SIZE).cast::<u64>();
            assert!(!p.is_null());
            // SAFETY: a fresh block of `SIZE` bytes, 16-aligned.
            unsafe { p.write(tag + i) };
            Addr(p as usize)
        })
        .collect()
}

/// Checks each block's tag, then frees it.
fn check_and_free(blocks: Vec<Addr>, tag: u64) {
    for (i, a) in blocks.into_iter().enumerate() {
        // SAFETY: a live block holding its tag, freed once here.
        unsafe {
            assert_eq!((a.0 as *const u64).read(), tag + i as u64);
            raw::free(a.0 as *mut u8);
        }
    }
}

#[test]
fn a_page_emptied_while_its_owner_sleeps() {
    let (tx, rx) = mpsc::channel();
    let (wake_tx, wake_rx) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        tx.send(allocate(1 << 32)).unwrap();
        wake_rx.recv().unwrap();
        let again = allocate(2 << 32);
        shrinkalloc::check::check_thread_heap().unwrap();
        check_and_free(again, 2 << 32);
        shrinkalloc::check::check_thread_heap().unwrap();
    });
    let blocks = rx.recv().unwrap();
    let before = shrinkalloc::stats().stranded_pages;
    check_and_free(blocks, 1 << 32);
    shrinkalloc::purge();
    let emptied = shrinkalloc::stats().stranded_pages - before;
    assert!(emptied >= 2, "{emptied} of the owner's full pages were given back");
    wake_tx.send(()).unwrap();
    owner.join().unwrap();
}
