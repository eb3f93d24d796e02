//! The `preload` scenario in short: an unmodified `redis-server` under
//! LD_PRELOAD in a 96 MiB memory cgroup, its dataset growing without
//! `maxmemory`, under shrinkalloc, glibc, jemalloc and mimalloc. The harness
//! prints the table (how much data each held when redis failed, its RSS
//! before and after FLUSHALL); every allocator ends at the limit; under
//! shrinkalloc redis checks every value it was asked for and ends cleanly
//! (its malloc refused at the hard limit, redis aborting with its own
//! out-of-memory report, or OOM-killed) and never crashes (a SIGSEGV, or an
//! abort with no out-of-memory report, would be a heap bug). Needs
//! `redis-server`: `.ci/run` installs it.

mod common;

use std::process::Command;

#[test]
fn preload_table_covers_each_allocator_and_redis_never_crashes_under_shrinkalloc() {
    let redis = Command::new("redis-server").arg("--version").output();
    assert!(
        redis.is_ok_and(|o| o.status.success()),
        "redis-server is missing: .ci/run must install it (apt-get install redis-server)"
    );
    let run = common::run(
        "preload",
        "preload",
        "shrinkalloc,glibc,jemalloc,mimalloc",
        &["--limit", "96M", "--duration", "8s", "--seed", "7"],
    );
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    for header in ["data held at the end", "RSS filled", "RSS after FLUSHALL", "given back"] {
        assert!(stdout.contains(header), "the table has no column {header:?}:\n{stdout}");
    }
    for allocator in ["shrinkalloc", "glibc", "jemalloc", "mimalloc"] {
        let r = run.row(allocator);
        if r.col("outcome") == "skipped" {
            eprintln!("!!! {allocator} is not installed here: {}", r.col("detail"));
            continue;
        }
        assert!(
            matches!(r.col("outcome"), "oom_killed" | "alloc_failed"),
            "redis under {allocator} did not end at the limit: {r:#?}"
        );
        assert!(r.field("rss_filled") > 0 && r.field("data_bytes") > 0, "{allocator}: no figures: {r:#?}");
        assert!(stdout.lines().any(|l| l.starts_with(allocator) && l.contains('%')), "no table row for {allocator}");
        common::assert_cgroup_removed(r);
    }
    let s = run.row("shrinkalloc");
    assert_eq!(s.field("verified"), 1000, "redis under shrinkalloc did not return every value checked: {s:#?}");
    if s.col("outcome") == "alloc_failed" {
        assert_eq!(s.col("exit"), "signal 6", "{s:#?}");
        assert!(s.field("oom_bytes") > 0, "redis aborted without its out-of-memory report: {s:#?}");
    }
    assert_eq!(run.output.status.code(), Some(0), "the harness reports a failure");
    let _ = std::fs::remove_dir_all(&run.out_dir);
}
