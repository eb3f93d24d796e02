//! The demo's claim, as a test: a cache daemon whose cache outgrows its
//! memory cgroup stays alive and under the limit on shrinkalloc (its cache
//! behind a shrinker, its limits found in its cgroup), with every value it
//! served checked, while the same program on glibc is OOM-killed.

mod common;

#[test]
fn cache_survives_under_the_limit_on_shrinkalloc_and_glibc_is_oom_killed() {
    let run =
        common::run("cache", "cache", "shrinkalloc,glibc", &["--limit", "128M", "--duration", "5s", "--seed", "7"]);
    common::assert_survived_under_limit(&run, "shrinkalloc");
    let s = run.row("shrinkalloc");
    let hard = s.field("hard_limit");
    assert!(
        hard > 0 && hard <= s.num("limit_bytes"),
        "shrinkalloc ran without a hard limit under the cgroup's: {s:#?}"
    );
    assert!(s.field("hits") > 0, "no get was served (and checked): {s:#?}");
    assert!(s.field("evicted") > 0, "the shrinker evicted nothing: {s:#?}");
    assert!(s.field("puts") as f64 * 8448.0 > 128.0 * 1048576.0, "the cache never outgrew the limit: {s:#?}");
    let g = run.row("glibc");
    assert_eq!(g.col("outcome"), "oom_killed", "glibc was expected to be OOM-killed: {g:#?}");
    if run.used_cgroup() {
        assert!(g.num("oom_kills") >= 1, "the cgroup counted no OOM kill: {g:#?}");
    }
    common::assert_cgroup_removed(g);
    assert_eq!(run.output.status.code(), Some(0), "the harness reports a failure");
    let _ = std::fs::remove_dir_all(&run.out_dir);
}
