//! The control run of `reclaim_deadlock.rs`: the same scenario with reclaim
//! told to ignore scope masks (a test-only switch). T's own direct reclaim
//! then calls the FS shrinker, which waits for the lock T holds: T hangs.
//! Seeing the hang (by a timeout) proves the deadlock test can fail.
//!
//! T stays stuck when this test returns; the process exits anyway.

mod reclaim_support;

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use reclaim_support::deadlock::{self, T_ENTERED_FS_SCAN};
use reclaim_support::watchdog;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

#[test]
fn ignoring_the_nofs_mask_deadlocks_on_the_fs_lock() {
    watchdog(Duration::from_secs(60), "the deadlock control test");
    shrinkalloc::reclaim::testing::ignore_scope_mask(true);
    let s = deadlock::start();
    match s.done.recv_timeout(Duration::from_secs(5)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("T finished with the mask ignored ({other:?}): the test cannot see the deadlock"),
    }
    assert!(T_ENTERED_FS_SCAN.load(Ordering::Relaxed), "T hangs inside the FS shrinker, on L");
    // Let the rest of the process allocate again (at the limit, with the
    // mask ignored, any thread's reclaim would join T on L). T will never
    // leave its scan: keep the handles (unregistering would wait for it).
    shrinkalloc::reclaim::set_hard_limit(None);
    shrinkalloc::reclaim::set_soft_limit(None);
    shrinkalloc::reclaim::testing::ignore_scope_mask(false);
    std::mem::forget(s);
}
