//! Blocks that other threads free into the pages of a thread that sleeps
//! go back to the OS without waiting for it: a page whose every block
//! waits on its cross-thread list is given back whole by `purge()`
//! (the C library's `malloc_trim`) and, in a process gone idle, by the
//! decay's global tick. Before, they stayed resident until the owner
//! allocated again or exited (`benches/programs/sleepy_owner.c`: 68 MiB of
//! 512-byte blocks kept after `malloc_trim`).
//!
//! Then the owner wakes and allocates from those pages again: each starts
//! over, carved anew, the blocks are whole, the page's counting identity
//! holds (`check_thread_heap`), and once everything is freed and purged the
//! committed count is back where it started (no drift either way).

mod common;
mod sleeper;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::Block;
use sleeper::Alarm;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;
/// What the owner allocates: 16 MiB.
const TOTAL: usize = 16 * MIB;
/// Block sizes: 128 to a 64 KiB small page; 8 to a 128 KiB medium page.
const SIZES: [usize; 2] = [512, 16 << 10];

fn committed() -> usize {
    shrinkalloc::stats().committed
}

/// The owner's blocks of `size` bytes: allocated on a thread of their own
/// and handed to the caller once that thread sleeps (in `read(2)`: no
/// allocation, no slow path, while the blocks are freed; see `sleeper`).
/// Woken by the alarm, it allocates as many again, checks and frees them,
/// and exits.
fn sleeping_owner(size: usize) -> (Vec<Block>, Alarm, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let (bed, alarm) = sleeper::bed();
    let n = TOTAL / size;
    let owner = thread::spawn(move || {
        let blocks: Vec<Block> = (0..n).map(|i| Block::new(size, 8, common::How::Malloc, false, i as u64)).collect();
        tx.send(blocks).unwrap();
        assert!(bed.sleep(), "the test ended without waking the owner");
        let again: Vec<Block> =
            (0..n).map(|i| Block::new(size, 8, common::How::Malloc, false, (n + i) as u64)).collect();
        shrinkalloc::check::check_thread_heap().expect("the owner's pages after they started over");
        for b in &again {
            b.check("a block of a page that started over");
        }
        again.into_iter().for_each(Block::free);
        shrinkalloc::check::check_thread_heap().expect("the owner's pages after freeing");
    });
    let blocks = rx.recv().unwrap();
    alarm.wait_asleep();
    (blocks, alarm, owner)
}

#[test]
fn purge_gives_back_blocks_freed_into_a_sleeping_owners_pages() {
    for size in SIZES {
        purge_gives_back(size);
    }
}

fn purge_gives_back(size: usize) {
    shrinkalloc::purge();
    let start = committed();
    let (blocks, alarm, owner) = sleeping_owner(size);
    let full = committed();
    assert!(full >= start + 15 * MIB, "the blocks were never committed: {start} -> {full}");
    blocks.into_iter().for_each(Block::free);
    let (freed, rss_freed) = (committed(), common::rss_bytes());
    shrinkalloc::purge();
    let (purged, rss_purged) = (committed(), common::rss_bytes());
    eprintln!(
        "{size}-byte blocks: committed KiB: start {}, blocks live {}, freed by this thread {}, \
         after purge {}; resident KiB {} -> {}",
        start >> 10,
        full >> 10,
        freed >> 10,
        purged >> 10,
        rss_freed >> 10,
        rss_purged >> 10
    );
    // All but the pages the owner had not filled (the last of the class).
    assert!(
        purged + 15 * MIB <= freed,
        "purge gave back {} KiB of the owner's 16 MiB of {size}-byte blocks",
        (freed - purged) >> 10
    );
    assert!(
        rss_purged + 12 * MIB <= rss_freed,
        "resident set went from {} to {} KiB only",
        rss_freed >> 10,
        rss_purged >> 10
    );

    alarm.wake();
    owner.join().unwrap();
    shrinkalloc::purge();
    let end = committed();
    eprintln!("committed at end {} KiB", end >> 10);
    // What is left is this thread's and the library's own state: a few MiB
    // at most either way, where a counting error would leave MiB by the
    // dozen (or wrap around).
    assert!(end <= start + 4 * MIB, "committed grew by {} KiB", (end - start) >> 10);
    assert!(end + 4 * MIB >= start, "committed shrank by {} KiB: a page uncounted twice", (start - end) >> 10);
}

const CHILD: &str = "SHRINKALLOC_TEST_SLEEPING_OWNER_CHILD";

/// Without any call: the pressure monitor's decay tick gives the pages
/// back while every thread that allocates sleeps. Runs as a child with the
/// monitor forced on and a short purge delay (the environment is read
/// once, at the first allocation).
#[test]
fn an_idle_process_gives_back_blocks_of_a_sleeping_owner() {
    if std::env::var_os(CHILD).is_none() {
        let env = [(CHILD, "1"), ("SHRINKALLOC_MONITOR", "on"), ("SHRINKALLOC_PURGE_DELAY_MS", "200")];
        let test = "an_idle_process_gives_back_blocks_of_a_sleeping_owner";
        let (stdout, stderr) = common::rerun_self(test, &env);
        assert!(stdout.contains("IDLE OK"), "{stdout}\n{stderr}");
        return;
    }
    let (blocks, alarm, owner) = sleeping_owner(SIZES[0]);
    // Measured before the frees: the monitor's tick may empty pages while
    // they run.
    let freed = committed();
    blocks.into_iter().for_each(Block::free);
    // Idle: this thread sleeps without allocating, the owner too.
    thread::sleep(Duration::from_millis(2000));
    let idle = committed();
    assert!(idle + 15 * MIB <= freed, "idle for 2 s (10 purge delays), committed went from {freed} to {idle} only");
    alarm.wake();
    owner.join().unwrap();
    println!("IDLE OK {freed} -> {idle}");
}

/// A chain counted one block short and then collected by its owner must
/// not hide the page later: the owner hands the blocks out again, other
/// threads free them all with the old chain's head last (so the new chain
/// has the same head), and a purge still gives the pages back.
#[test]
fn a_page_counted_short_then_reused_is_emptied_later() {
    use std::collections::BTreeMap;
    const N: usize = 3 * 128;
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let ((bed1, alarm1), (bed2, alarm2)) = (sleeper::bed(), sleeper::bed());
    let owner = thread::spawn(move || {
        for bed in [bed1, bed2] {
            tx.send((0..N).map(|_| shrinkalloc::raw::malloc(SIZES[0]) as usize).collect()).unwrap();
            assert!(bed.sleep(), "the test ended without waking the owner");
        }
    });
    let first = rx.recv().unwrap();
    alarm1.wait_asleep();
    // All but one block of each page freed here: each chain counted short.
    let mut pages: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &p in &first {
        pages.entry(p >> 16).or_default().push(p);
    }
    let kept: Vec<usize> = pages.values().map(|v| v[0]).collect();
    let free = |p: usize| {
        // SAFETY: a live block from `raw::malloc`, freed once.
        unsafe { shrinkalloc::raw::free(p as *mut u8) }
    };
    pages.values().flat_map(|v| v[1..].iter().copied()).for_each(free);
    shrinkalloc::purge();
    alarm1.wake();
    // The owner collected those chains and allocated again, the old heads
    // first (the free list is last in, first out).
    let second = rx.recv().unwrap();
    alarm2.wait_asleep();
    kept.into_iter().for_each(free);
    let before = shrinkalloc::stats().stranded_pages;
    second.into_iter().rev().for_each(free);
    shrinkalloc::purge();
    let emptied = shrinkalloc::stats().stranded_pages - before;
    alarm2.wake();
    owner.join().unwrap();
    assert!(emptied >= 2, "{emptied} pages given back after every block of three came back");
}
