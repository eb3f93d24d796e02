//! Under Miri and as an ordinary test: an explicit reclaim pass purges the
//! allocator's free pages and calls a registered shrinker, whose `scan`
//! frees blocks from inside reclaim. (Raw API for the cache's blocks: see
//! `miri_random_ops.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use shrinkalloc::reclaim::{self, CountResult, Level, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};

/// A block of 4000 bytes of ours.
struct Item(*mut u8);
// SAFETY: owned by the value alone.
unsafe impl Send for Item {}
impl Item {
    fn new() -> Self {
        let p = shrinkalloc::raw::malloc(4_000);
        assert!(!p.is_null());
        Item(p)
    }
}
impl Drop for Item {
    fn drop(&mut self) {
        // SAFETY: the block is live and freed once, here.
        unsafe { shrinkalloc::raw::free(self.0) };
    }
}

struct Cache {
    items: Mutex<Vec<Item>>,
    scans: AtomicUsize,
}

impl Shrinker for &'static Cache {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        match self.items.lock().unwrap().len() {
            0 => CountResult::Empty,
            n => CountResult::Count(n),
        }
    }
    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        self.scans.fetch_add(1, Ordering::Relaxed);
        let mut items = self.items.lock().unwrap();
        let n = sc.nr_to_scan().min(items.len());
        let at = items.len() - n;
        items.truncate(at);
        ScanResult::Freed(n)
    }
}

#[test]
fn a_reclaim_pass_calls_the_shrinker_and_frees_its_blocks() {
    let items = if cfg!(miri) { 64 } else { 4_096 };
    let cache: &'static Cache = Box::leak(Box::new(Cache {
        items: Mutex::new((0..items).map(|_| Item::new()).collect()),
        scans: AtomicUsize::new(0),
    }));
    let handle = reclaim::register(cache, ShrinkerOptions::new("miri-cache"));
    // Ask for more than purging alone can give: the shrinker must be asked.
    reclaim::reclaim(1 << 30, Level::Critical);
    assert!(cache.scans.load(Ordering::Relaxed) > 0, "the pass never scanned the shrinker");
    assert!(cache.items.lock().unwrap().len() < items, "the scan freed nothing");
    handle.unregister();
    shrinkalloc::check::check_thread_heap().unwrap();
}
