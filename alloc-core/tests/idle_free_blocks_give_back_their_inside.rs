//! With no memory line in force, free blocks of 8 KiB or more that stay
//! free for the purge delay give the OS pages inside them back at their
//! owner's decay tick, even while their page keeps live blocks: a daemon
//! that freed most of a burst of buffers does not keep the burst resident.
//! The same for an exited thread's heap, which the decay's global tick
//! collects; and a purge gives them back at once. Under a line they do not
//! (reclaim decides there). Each case runs as a
//! child with a 50 ms purge delay (the environment is read once, at the
//! first allocation).

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

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Allocates the buffers, fills them, frees two in three (every page keeps
/// a survivor), then keeps up small allocations for `idle` so that the
/// thread's decay tick runs. Returns the committed bytes right after the
/// frees and after `idle`, and checks that the survivors kept their bytes
/// and that the freed buffers serve new requests again.
fn burst_then_idle(idle: Duration) -> (usize, usize) {
    // SAFETY: a non-zero size.
    let mut buffers: Vec<*mut u8> = (0..BUFFERS).map(|_| unsafe { alloc(layout(BUFFER)) }).collect();
    for (i, &p) in buffers.iter().enumerate() {
        assert!(!p.is_null());
        // SAFETY: a live block of `BUFFER` bytes.
        unsafe { p.write_bytes(i as u8, BUFFER) };
    }
    for (i, p) in buffers.iter_mut().enumerate() {
        if i % 3 != 0 {
            // SAFETY: live with this layout; nulled, so freed once.
            unsafe { dealloc(std::mem::replace(p, std::ptr::null_mut()), layout(BUFFER)) };
        }
    }
    let freed = shrinkalloc::stats().committed;
    small_traffic(idle);
    let idle_committed = shrinkalloc::stats().committed;
    for (i, &p) in buffers.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        // SAFETY: a survivor: live, `BUFFER` bytes, all written above.
        let bytes = unsafe { std::slice::from_raw_parts(p, BUFFER) };
        assert!(bytes.iter().all(|&b| b == i as u8), "survivor {i} lost its bytes");
    }
    for (i, p) in buffers.iter_mut().enumerate().filter(|(i, _)| i % 3 != 0) {
        // SAFETY: a non-zero size.
        *p = unsafe { alloc(layout(BUFFER)) };
        assert!(!p.is_null());
        // SAFETY: a live block of `BUFFER` bytes.
        unsafe { p.write_bytes(i as u8, BUFFER) };
    }
    for &p in &buffers {
        // SAFETY: every entry is live with this layout, freed once here.
        unsafe { dealloc(p, layout(BUFFER)) };
    }
    shrinkalloc::check::check_thread_heap().unwrap();
    (freed, idle_committed)
}

#[test]
fn idle_free_blocks_give_back_their_inside() {
    if std::env::var_os(CHILD).is_none() {
        let env = [(CHILD, "1"), ("SHRINKALLOC_PURGE_DELAY_MS", "50"), ("SHRINKALLOC_CGROUP", "off")];
        let (stdout, stderr) = common::rerun_self("idle_free_blocks_give_back_their_inside", &env);
        assert!(stdout.contains("IDLE BLOCKS OK"), "{stdout}\n{stderr}");
        return;
    }
    let (freed, idle) = std::thread::spawn(|| burst_then_idle(Duration::from_millis(600))).join().unwrap();
    // 200 freed buffers, each with at least 32 KiB of whole OS pages inside.
    assert!(idle + 6 * MIB <= freed, "committed {freed} after the frees, {idle} after 600 ms idle");
    println!("IDLE BLOCKS OK {freed} -> {idle}");
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

#[test]
fn an_exited_threads_idle_free_blocks_give_back_their_inside() {
    if std::env::var_os(CHILD).is_none() {
        let env = [(CHILD, "1"), ("SHRINKALLOC_PURGE_DELAY_MS", "50"), ("SHRINKALLOC_CGROUP", "off")];
        let (stdout, stderr) = common::rerun_self("an_exited_threads_idle_free_blocks_give_back_their_inside", &env);
        assert!(stdout.contains("EXITED OK"), "{stdout}\n{stderr}");
        return;
    }
    // The survivors outlive the thread that allocated them: its heap, with
    // their pages and the freed buffers, is abandoned when it exits, and
    // the decay's global tick on this thread collects it.
    let survivors = std::thread::spawn(|| {
        // SAFETY: a non-zero size.
        let buffers: Vec<usize> = (0..BUFFERS).map(|_| unsafe { alloc(layout(BUFFER)) } as usize).collect();
        let mut kept = Vec::new();
        for (i, &p) in buffers.iter().enumerate() {
            assert_ne!(p, 0);
            // SAFETY: a live block of `BUFFER` bytes.
            unsafe { (p as *mut u8).write_bytes(i as u8, BUFFER) };
            if i % 3 == 0 {
                kept.push((i, p));
            } else {
                // SAFETY: live with this layout, freed once.
                unsafe { dealloc(p as *mut u8, layout(BUFFER)) };
            }
        }
        kept
    })
    .join()
    .unwrap();
    let freed = shrinkalloc::stats().committed;
    small_traffic(Duration::from_millis(600));
    let idle = shrinkalloc::stats().committed;
    for &(i, p) in &survivors {
        // SAFETY: a survivor: live, `BUFFER` bytes, all written above.
        let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, BUFFER) };
        assert!(bytes.iter().all(|&b| b == i as u8), "survivor {i} lost its bytes");
        // SAFETY: live with this layout, freed once.
        unsafe { dealloc(p as *mut u8, layout(BUFFER)) };
    }
    assert!(idle + 6 * MIB <= freed, "committed {freed} after the thread exited, {idle} after 600 ms");
    println!("EXITED OK {freed} -> {idle}");
}

#[test]
fn a_purge_gives_back_free_blocks_at_once() {
    if std::env::var_os(CHILD).is_none() {
        // A purge delay far longer than the test: only the purge can act.
        let env = [(CHILD, "1"), ("SHRINKALLOC_PURGE_DELAY_MS", "60000"), ("SHRINKALLOC_CGROUP", "off")];
        let (stdout, stderr) = common::rerun_self("a_purge_gives_back_free_blocks_at_once", &env);
        assert!(stdout.contains("PURGE OK"), "{stdout}\n{stderr}");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: a non-zero size.
        let buffers: Vec<*mut u8> = (0..BUFFERS).map(|_| unsafe { alloc(layout(BUFFER)) }).collect();
        for (i, &p) in buffers.iter().enumerate() {
            assert!(!p.is_null());
            // SAFETY: a live block of `BUFFER` bytes.
            unsafe { p.write_bytes(i as u8, BUFFER) };
            if i % 3 != 0 {
                // SAFETY: live with this layout, freed once.
                unsafe { dealloc(p, layout(BUFFER)) };
            }
        }
        let freed = shrinkalloc::stats().committed;
        let released = shrinkalloc::purge();
        let purged = shrinkalloc::stats().committed;
        assert!(purged + 6 * MIB <= freed, "committed {freed} after the frees, {purged} after purge()");
        assert!(released >= 6 * MIB, "purge() said {released} bytes");
        for (i, &p) in buffers.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            // SAFETY: a survivor: live, `BUFFER` bytes, all written above.
            let bytes = unsafe { std::slice::from_raw_parts(p, BUFFER) };
            assert!(bytes.iter().all(|&b| b == i as u8), "survivor {i} lost its bytes");
            // SAFETY: live with this layout, freed once.
            unsafe { dealloc(p, layout(BUFFER)) };
        }
        shrinkalloc::check::check_thread_heap().unwrap();
        println!("PURGE OK {freed} -> {purged}");
    })
    .join()
    .unwrap();
}

#[test]
fn under_a_line_idle_free_blocks_stay_committed() {
    if std::env::var_os(CHILD).is_none() {
        let env = [
            (CHILD, "1"),
            ("SHRINKALLOC_PURGE_DELAY_MS", "50"),
            ("SHRINKALLOC_CGROUP", "off"),
            ("SHRINKALLOC_HARD_LIMIT", "1G"),
        ];
        let (stdout, stderr) = common::rerun_self("under_a_line_idle_free_blocks_stay_committed", &env);
        assert!(stdout.contains("LINE OK"), "{stdout}\n{stderr}");
        return;
    }
    let (freed, idle) = std::thread::spawn(|| burst_then_idle(Duration::from_millis(600))).join().unwrap();
    // Far from the line: only whole free pages may go (none here but the
    // small traffic's).
    assert!(idle + 256 * KIB >= freed, "committed {freed} after the frees, {idle} after 600 ms idle");
    println!("LINE OK {freed} -> {idle}");
}
