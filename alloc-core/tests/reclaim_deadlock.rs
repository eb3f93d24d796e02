//! The deadlock this project exists for, as the library ships: thread T
//! holds lock L, enters a `NOFS` scope and allocates past the hard limit,
//! while the only big cache is behind an `FS` shrinker that needs L. T must
//! finish — the `NONE` shrinker and purging give it room, then an
//! allocation is refused cleanly — and T never calls the FS shrinker. The
//! FS work it skipped is paid afterwards by the unrestricted background
//! reclaimer, once L is free. `reclaim_deadlock_control.rs` runs the same
//! scenario with the mask ignored and sees it hang.

mod reclaim_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use reclaim_support::deadlock::{self, T_ENTERED_FS_SCAN, T_PEAK};
use reclaim_support::{wait_until, watchdog, Caller};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

#[test]
fn nofs_thread_holding_fs_lock_finishes_past_the_hard_limit() {
    watchdog(Duration::from_secs(60), "the deadlock test");
    let s = deadlock::start();
    let outcome = s.done.recv_timeout(Duration::from_secs(20)).expect("T hung: NOFS reclaim entered the FS shrinker");
    shrinkalloc::reclaim::set_hard_limit(None);
    eprintln!("T: {outcome:?}, headroom {} blocks; {}", s.headroom_blocks, shrinkalloc::reclaim::stats());
    assert!(!T_ENTERED_FS_SCAN.load(Ordering::Relaxed), "T called the FS shrinker");
    assert_eq!(s.fs.calls.scans_by(Caller::Other), 0, "the FS cache was scanned by a restricted thread");
    assert_eq!(s.fs.calls.violations.load(Ordering::Relaxed), 0);
    assert!(outcome.refused, "T cannot get 40 blocks under this limit without the FS cache");
    assert!(outcome.got > s.headroom_blocks, "the NONE shrinker gave T room: {outcome:?}");
    assert!(T_PEAK.load(Ordering::Relaxed) as usize <= s.hard, "committed went past the hard limit");
    assert!(s.handles[0].stats().skipped_by_mask > 0, "{:?}", s.handles[0].stats());
    // Once T let go of L, the work T owed the FS cache is paid in the background.
    let paid = wait_until(Duration::from_secs(20), || s.fs.calls.scans_by(Caller::Reclaimer) > 0);
    assert!(paid, "the unrestricted reclaimer never paid the FS work: {:?}", s.handles[0].stats());
}
