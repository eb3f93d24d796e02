//! The `cache-c` scenario in short: sa-cached (C, linked against
//! shrinkalloc, zero configuration), its block and metadata caches behind
//! shrinkers registered through the C API, serving a block space of four
//! times its 64 MiB memory cgroup. Under shrinkalloc it completes with every
//! block it served and still holds checked, nothing OOM-killed, its
//! shrinkers having evicted; its trace reached the harness whole (the
//! lookups replayed equal the hits and misses it counted) and the oracle
//! replayed it. The same daemon under glibc is OOM-killed. Needs root and
//! `cc`: without them the harness says which is missing and the test fails.

mod common;

#[test]
fn cache_c_daemon_survives_under_shrinkalloc_and_its_trace_replays_whole() {
    let run = common::run(
        "cache-c",
        "cache-c",
        "shrinkalloc,glibc",
        &["--limit", "64M", "--demand", "256M", "--duration", "5s", "--seed", "7"],
    );
    common::assert_survived_under_limit(&run, "shrinkalloc");
    let s = run.row("shrinkalloc");
    for counter in ["requests", "hits", "misses", "evicted", "meta_evicted", "verified", "cpu_ms"] {
        assert!(s.field(counter) > 0, "no {counter}: {s:#?}");
    }
    assert_eq!(s.field("corrupt"), 0, "a block differed from its pattern: {s:#?}");
    assert_eq!(s.num("gets"), s.field("hits") + s.field("misses"), "the trace lost lookups: {s:#?}");
    assert_eq!(s.num("hits"), s.field("hits"), "the trace's hits differ from the daemon's: {s:#?}");
    assert!(s.num("ideal_hits") > 0, "the oracle found no hit: {s:#?}");
    let hard = s.field("hard_limit");
    assert!(hard > 0 && hard < s.num("limit_bytes"), "sa-cached ran without a hard limit under the cgroup's: {s:#?}");
    let g = run.row("glibc");
    assert_eq!(g.col("outcome"), "oom_killed", "glibc's sa-cached was expected to be OOM-killed: {g:#?}");
    common::assert_cgroup_removed(g);
    assert_eq!(run.output.status.code(), Some(0), "the harness reports a failure");
    let _ = std::fs::remove_dir_all(&run.out_dir);
}
