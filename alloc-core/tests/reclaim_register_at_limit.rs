//! Registering shrinkers and making a work queue work at the hard limit:
//! their few allocations use the reserve above it instead of failing (which,
//! inside `Box::new` or `Arc::new`, could only abort the process). The
//! limit is set to what is already committed, so any allocation that needs
//! a new page is refused unless it may use the reserve; hundreds of
//! registrations walk the registry's list through many size classes, so
//! some of them need new pages. Alone in its binary: the limit would refuse
//! other tests' allocations too.

use shrinkalloc::reclaim::{
    register, set_hard_limit, set_soft_limit, stats, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions,
    WorkQueue,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

struct Nothing;

impl Shrinker for Nothing {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        CountResult::Empty
    }

    fn scan(&self, _: &ShrinkControl) -> ScanResult {
        ScanResult::Stop
    }
}

#[test]
fn registering_and_making_a_queue_work_at_the_hard_limit() {
    // Everything the test itself needs is allocated before the limit.
    let mut handles = Vec::with_capacity(400);
    let options: Vec<ShrinkerOptions> = (0..400).map(|i| ShrinkerOptions::new(format!("at-the-limit-{i}"))).collect();
    let reserve_before = stats().reserve_charges;
    shrinkalloc::purge();
    let committed = shrinkalloc::stats().committed;
    set_soft_limit(None);
    set_hard_limit(Some(committed));
    for o in options {
        handles.push(register(Nothing, o));
    }
    let wq = WorkQueue::new("at-the-limit", 1);
    set_hard_limit(None);
    let used = stats().reserve_charges - reserve_before;
    assert_eq!(handles.len(), 400);
    assert_eq!(wq.name(), "at-the-limit");
    assert!(used > 0, "no registration needed a new page: the test did not test the limit");
    drop(handles);
}
