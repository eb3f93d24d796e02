//! With no memory line in force, free blocks of 8 KiB or more that stay
//! free for the purge delay give the OS pages inside them back at their
//! owner's decay tick, even while their page keeps live blocks: a daemon
//! that freed most of a burst of buffers does not keep the burst resident.
//! The same for an exited thread's heap, which the decay's global tick
//! collects; and a purge gives them back at once. Under a line they do not
//! (reclaim decides there). Each case runs as a child (the environment is
//! read once, at the first allocation).

mod common;

use std::alloc::{alloc, dealloc, Layout};
use std::time::{Duration, Instant};

use common::{KIB, MIB};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const CHILD: &str = "SHRINKALLOC_TEST_IDLE_BLOCKS_CHILD";

/// 40,000-byte buffers: three to a 128 KiB medium page.
const BUFFER: usize = 40_000;
const BUFFERS: usize = 300;

/// What 200 freed buffers give back at least: each has 32 KiB of whole OS
/// pages inside.
const GIVEN_BACK: usize = 6 * MIB;

fn layout() -> Layout {
    Layout::from_size_align(BUFFER, 8).unwrap()
}

/// In the parent, runs `test` again as a child with `env` and no cgroup
/// limits, and checks that it printed `done`; in the child, returns true.
fn in_child(test: &str, env: &[(&str, &str)], done: &str) -> bool {
    common::in_child_without_line(CHILD, test, env, done)
}

/// Allocates the buffers, fills buffer `i` with the byte `i`, then frees
/// two in three (every page keeps a survivor). Returns the survivors, as
/// `(i, address)`.
fn burst() -> Vec<(usize, usize)> {
    let buffers: Vec<*mut u8> = (0..BUFFERS)
        .map(|i| {
            // SAFETY: a non-zero size.
            let p = unsafe { alloc(layout()) };
            assert!(!p.is_null());
            // SAFETY: a live block of `BUFFER` bytes.
            unsafe { p.write_bytes(i as u8, BUFFER) };
            p
        })
        .collect();
    let mut survivors = Vec::new();
    for (i, p) in buffers.into_iter().enumerate() {
        if i % 3 == 0 {
            survivors.push((i, p as usize));
        } else {
            // SAFETY: live with this layout, freed once.
            unsafe { dealloc(p, layout()) };
        }
    }
    survivors
}

/// Checks that each survivor of [`burst`] kept its bytes, and frees it.
fn check_and_free(survivors: &[(usize, usize)]) {
    for &(i, p) in survivors {
        // SAFETY: a survivor: live, `BUFFER` bytes, all written by `burst`.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, BUFFER) };
        assert!(bytes.iter().all(|&b| b == i as u8), "survivor {i} lost its bytes");
        // SAFETY: live with this layout, freed once.
        unsafe { dealloc(p as *mut u8, layout()) };
    }
}

/// Small allocations of random sizes for `idle`, every 2 ms, so that the
/// calling thread takes slow paths (a thread that only recycles its own
/// frees takes none, and so no decay tick).
fn small_traffic(idle: Duration) {
    let mut rng = common::Rng::new(common::seed(), 2);
    let start = Instant::now();
    while start.elapsed() < idle {
        let small: Vec<Vec<u8>> = (0..2_000).map(|_| vec![7u8; rng.range(16, 256)]).collect();
        drop(std::hint::black_box(small));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// [`burst`], then 600 ms of [`small_traffic`] on the same thread; then the
/// freed buffers are allocated and written again (taken back from the
/// blocks given back) and everything is freed. Returns the committed bytes
/// after the frees and after the traffic.
fn burst_then_idle() -> (usize, usize) {
    let survivors = burst();
    let freed = shrinkalloc::stats().committed;
    small_traffic(Duration::from_millis(600));
    let idle = shrinkalloc::stats().committed;
    check_and_free(&survivors);
    for i in 0..BUFFERS {
        // SAFETY: a non-zero size; then a live block of `BUFFER` bytes,
        // freed once.
        unsafe {
            let p = alloc(layout());
            assert!(!p.is_null());
            p.write_bytes(i as u8, BUFFER);
            dealloc(p, layout());
        }
    }
    shrinkalloc::check::check_thread_heap().unwrap();
    (freed, idle)
}

#[test]
fn idle_free_blocks_give_back_their_inside() {
    let env = [("SHRINKALLOC_PURGE_DELAY_MS", "50")];
    if !in_child("idle_free_blocks_give_back_their_inside", &env, "IDLE BLOCKS OK") {
        return;
    }
    let (freed, idle) = std::thread::spawn(burst_then_idle).join().unwrap();
    assert!(idle + GIVEN_BACK <= freed, "committed {freed} after the frees, {idle} after 600 ms idle");
    println!("IDLE BLOCKS OK {freed} -> {idle}");
}

#[test]
fn an_exited_threads_idle_free_blocks_give_back_their_inside() {
    let env = [("SHRINKALLOC_PURGE_DELAY_MS", "50")];
    let test = "an_exited_threads_idle_free_blocks_give_back_their_inside";
    if !in_child(test, &env, "EXITED OK") {
        return;
    }
    // The survivors outlive the thread that allocated them: its heap, with
    // their pages and the freed buffers, is abandoned when it exits, and
    // the decay's global tick on this thread collects it.
    let survivors = std::thread::spawn(burst).join().unwrap();
    let freed = shrinkalloc::stats().committed;
    small_traffic(Duration::from_millis(600));
    let idle = shrinkalloc::stats().committed;
    check_and_free(&survivors);
    assert!(idle + GIVEN_BACK <= freed, "committed {freed} after the thread exited, {idle} after 600 ms");
    println!("EXITED OK {freed} -> {idle}");
}

#[test]
fn a_purge_gives_back_free_blocks_at_once() {
    // A purge delay far longer than the test: only the purge can act.
    let env = [("SHRINKALLOC_PURGE_DELAY_MS", "60000")];
    if !in_child("a_purge_gives_back_free_blocks_at_once", &env, "PURGE OK") {
        return;
    }
    std::thread::spawn(|| {
        let survivors = burst();
        let freed = shrinkalloc::stats().committed;
        let released = shrinkalloc::purge();
        let purged = shrinkalloc::stats().committed;
        check_and_free(&survivors);
        shrinkalloc::check::check_thread_heap().unwrap();
        assert!(purged + GIVEN_BACK <= freed, "committed {freed} after the frees, {purged} after purge()");
        assert!(released >= GIVEN_BACK, "purge() said {released} bytes");
        println!("PURGE OK {freed} -> {purged}");
    })
    .join()
    .unwrap();
}

#[test]
fn under_a_line_idle_free_blocks_stay_committed() {
    let env = [("SHRINKALLOC_PURGE_DELAY_MS", "50"), ("SHRINKALLOC_HARD_LIMIT", "1G")];
    if !in_child("under_a_line_idle_free_blocks_stay_committed", &env, "LINE OK") {
        return;
    }
    let (freed, idle) = std::thread::spawn(burst_then_idle).join().unwrap();
    // Far from the line: only whole free pages may go (none here but the
    // small traffic's).
    assert!(idle + 256 * KIB >= freed, "committed {freed} after the frees, {idle} after 600 ms idle");
    println!("LINE OK {freed} -> {idle}");
}
