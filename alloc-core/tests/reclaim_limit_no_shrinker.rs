//! Without a shrinker, the growth of `reclaim_limit_cache.rs` fails cleanly
//! at the hard limit: the allocator returns null (Rust sees a failed
//! `try_reserve`, not an abort), committed memory never passes the limit,
//! and once memory is freed, allocation works again.

mod reclaim_support;

use std::time::Duration;

use reclaim_support::{committed, limit_above_committed, watchdog, Raw, BLOCK, MIB};
use shrinkalloc::reclaim::{set_hard_limit, stats};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

#[test]
fn allocation_past_the_hard_limit_fails_cleanly_with_null() {
    watchdog(Duration::from_secs(60), "the no-shrinker limit test");
    let hard = limit_above_committed(32 * MIB);
    let mut held: Vec<Raw> = Vec::with_capacity(100);
    let mut refused = false;
    for _ in 0..100 {
        match Raw::try_new(BLOCK) {
            Some(b) => held.push(b),
            None => {
                refused = true;
                break;
            }
        }
        assert!(committed() <= hard, "committed {} past the hard limit {hard}", committed());
    }
    assert!(refused, "200 MiB fitted under a 32 MiB limit");
    assert!(held.len() >= 12 && held.len() <= 16, "{} blocks of 2 MiB under 32 MiB", held.len());
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve_exact(8 * MIB).is_err(), "try_reserve sees the refusal");
    assert!(stats().failed_charges > 0);
    held.truncate(held.len() / 2);
    assert!(Raw::try_new(BLOCK).is_some(), "freed memory is usable again");
    set_hard_limit(None);
}
