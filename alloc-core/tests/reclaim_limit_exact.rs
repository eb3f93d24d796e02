//! An explicit hard limit is exact under concurrent charges (issue 15,
//! item 5): eight threads that allocate at once until refused never take
//! the committed bytes past the limit, neither with huge blocks (each
//! mapped and charged alone) nor with small ones (pages carved and
//! segments mapped). Each charge reserves its bytes against the limit
//! before the core commits them; before, each thread checked the limit,
//! then committed, and several could pass the check for the same room.

mod reclaim_support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use reclaim_support::{committed, limit_above_committed, watchdog, Raw, MIB};
use shrinkalloc::reclaim::{set_hard_limit, set_soft_limit};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const THREADS: usize = 8;
const ROUNDS: usize = 10;

/// One round: `THREADS` threads allocate `size`-byte blocks until one is
/// refused, holding them; returns the limit and the committed bytes at the
/// end, with every block still held.
fn round(size: usize) -> (usize, usize) {
    let start = Arc::new(Barrier::new(THREADS + 1));
    let full = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (start, full, done) = (start.clone(), full.clone(), done.clone());
            thread::spawn(move || {
                // Room for every block before the limit is set: the list
                // itself never grows at the limit.
                let mut held = Vec::with_capacity(64 * MIB / size + 16);
                drop(Raw::try_new(size));
                start.wait();
                while held.len() < held.capacity() {
                    match Raw::try_new(size) {
                        Some(b) => held.push(b),
                        None => break,
                    }
                }
                full.wait();
                done.wait();
                drop(held);
            })
        })
        .collect();
    let limit = limit_above_committed(32 * MIB);
    start.wait();
    full.wait();
    let at_end = committed();
    set_hard_limit(None);
    set_soft_limit(None);
    done.wait();
    for t in threads {
        t.join().unwrap();
    }
    (limit, at_end)
}

#[test]
fn concurrent_charges_never_pass_the_hard_limit() {
    watchdog(Duration::from_secs(120), "reclaim_limit_exact");
    for (size, what) in [(2 * MIB, "huge blocks"), (6 << 10, "small blocks")] {
        let mut worst = 0isize;
        for _ in 0..ROUNDS {
            let (limit, at_end) = round(size);
            worst = worst.max(at_end as isize - limit as isize);
        }
        eprintln!("{what}: worst committed - limit over {ROUNDS} rounds: {worst} bytes");
        assert!(worst <= 0, "{what}: {THREADS} threads took committed {worst} bytes past the hard limit");
    }
}
