//! Blocks that reclaim frees into the pages of a thread that does not
//! allocate (blocked, here in `read(2)`, as a main thread in
//! `pthread_join`) give their memory back at once: the allocation that
//! needed the room gets it, although the pages stay the sleeping owner's.
//! Issue 15: "no allocation at an explicit hard limit is refused while the
//! shrinkers it may call still hold enough".
//!
//! Then the owner wakes and allocates from those pages again: the blocks
//! whose inside went back are charged again, the page's counting identity
//! holds (`check_thread_heap`), and once everything is freed and purged the
//! committed count is back where it started (no drift either way).

mod reclaim_support;
mod sleeper;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use reclaim_support::{committed, watchdog, Cache, CacheShrinker, Raw, MIB};
use shrinkalloc::reclaim::{register, set_hard_limit, set_soft_limit, stats, Needs, ShrinkerOptions};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// The cache's blocks: medium blocks, eight to a 128 KiB page.
const SMALL: usize = 16 << 10;
/// What the cache holds: 48 MiB.
const CACHED: usize = 3072;
/// The allocating thread's blocks (large pages, its own heap).
const BIG: usize = MIB;
/// What the allocating thread asks for: twice the room under the line.
const WANTED: usize = 32;
/// Room under the hard limit when the cache is full.
const ROOM: usize = 16 * MIB;
/// What reclaim's own allocations may add above the hard limit.
const SLACK: usize = MIB;

#[test]
fn blocks_freed_into_a_sleeping_owners_pages_make_room_at_once() {
    watchdog(Duration::from_secs(120), "the blocked-owner test");
    shrinkalloc::purge();
    let start = committed();
    let cache = Cache::new(Needs::NONE);
    let (filled_tx, filled_rx) = mpsc::channel();
    let (bed, alarm) = sleeper::bed();
    let owner = {
        let cache = Arc::clone(&cache);
        thread::spawn(move || {
            for _ in 0..CACHED {
                let b = Raw::try_new(SMALL).expect("filling the cache");
                cache.lock().push(b);
            }
            filled_tx.send(()).unwrap();
            // Asleep while the other thread's reclaim frees its blocks.
            assert!(bed.sleep(), "the test ended without waking the owner");
            // Awake: allocate from the same pages again (their blocks
            // come off `decommitted`, charged again), then give it all up.
            let again: Vec<Raw> = (0..CACHED / 2).map(|_| Raw::try_new(SMALL).expect("reallocating")).collect();
            shrinkalloc::check::check_thread_heap().expect("the owner's pages after reuse");
            drop(again);
            shrinkalloc::check::check_thread_heap().expect("the owner's pages after freeing");
            shrinkalloc::purge();
        })
    };
    filled_rx.recv().unwrap();
    alarm.wait_asleep();
    let hard = committed() + ROOM;
    set_soft_limit(None);
    set_hard_limit(Some(hard));
    let h = register(CacheShrinker(Arc::clone(&cache)), ShrinkerOptions::new("sleeping owner's cache").batch(32));

    let mut mine = Vec::new();
    let mut peak = 0;
    for i in 0..WANTED {
        let b = Raw::try_new(BIG).unwrap_or_else(|| {
            panic!(
                "allocation {i} of {WANTED} refused with {} of {CACHED} blocks still cached; {}",
                cache.len(),
                stats()
            )
        });
        mine.push(b);
        peak = peak.max(committed());
    }
    let left = cache.len();
    eprintln!("peak {} KiB, hard {} KiB, {left} of {CACHED} blocks left; {}", peak >> 10, hard >> 10, stats());
    assert!(peak <= hard + SLACK, "committed {peak} went past the hard limit {hard}");
    assert!(left < CACHED, "the shrinker was never asked");

    // Lift the limit, wake the owner, and free everything.
    set_hard_limit(None);
    drop(mine);
    alarm.wake();
    owner.join().unwrap();
    drop(h);
    cache.lock().clear();
    shrinkalloc::purge();
    let end = committed();
    eprintln!("committed at start {} KiB, at end {} KiB", start >> 10, end >> 10);
    // The owner's heap went with its thread; what is left is this thread's
    // and the library's own state: a few MiB at most either way, where a
    // counting error would leave tens of MiB (or wrap around).
    assert!(end <= start + 4 * MIB, "committed grew by {} KiB", (end - start) >> 10);
    assert!(end + 4 * MIB >= start, "committed shrank by {} KiB: holes counted twice", (start - end) >> 10);
}
