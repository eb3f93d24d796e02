//! Under Miri and as an ordinary test: blocks allocated by threads that have
//! exited stay valid, are freed later by another thread (into the exited
//! thread's abandoned heap), and a new thread adopts such a heap and
//! allocates from it. (Raw API: see `miri_random_ops.rs` for why.)

use shrinkalloc::raw;

const BLOCKS: usize = if cfg!(miri) { 40 } else { 4_000 };

/// A block address that may cross threads.
#[derive(Clone, Copy)]
struct Addr(usize);

/// `BLOCKS` blocks of 8 to 72 bytes, each starting with its tag.
fn allocate(tag: u64) -> Vec<Addr> {
    (0..BLOCKS as u64)
        .map(|i| {
            let p = raw::malloc(8 + 8 * (i as usize % 9)).cast::<u64>();
            assert!(!p.is_null());
            // SAFETY: a fresh block of at least 8 bytes, 16-aligned.
            unsafe { p.write(tag + i) };
            Addr(p as usize)
        })
        .collect()
}

#[test]
fn blocks_of_exited_threads_are_freed_later() {
    let mut kept = Vec::new();
    for round in 0..3u64 {
        kept.extend(std::thread::spawn(move || allocate(round << 32)).join().unwrap());
    }
    // The threads are gone; their heaps are abandoned. Check, then free half
    // here and half from a new thread (which may adopt one of those heaps).
    for (n, a) in kept.iter().enumerate() {
        let (round, i) = ((n / BLOCKS) as u64, (n % BLOCKS) as u64);
        // SAFETY: a live block holding its tag.
        assert_eq!(unsafe { (a.0 as *const u64).read() }, (round << 32) + i);
    }
    let second = kept.split_off(kept.len() / 2);
    let free = |blocks: Vec<Addr>| {
        for a in blocks {
            // SAFETY: each block is live and freed once.
            unsafe { raw::free(a.0 as *mut u8) };
        }
    };
    free(kept);
    std::thread::spawn(move || {
        let fresh = allocate(7 << 32);
        free(second);
        shrinkalloc::check::check_thread_heap().unwrap();
        free(fresh);
    })
    .join()
    .unwrap();
    shrinkalloc::check::check_thread_heap().unwrap();
}
