//! The `fuse` scenario in short: sa-fused (C, libfuse3, linked against
//! shrinkalloc), its block cache behind an `SA_NEEDS_FS` shrinker, mounted in
//! a 64 MiB memory cgroup while four writers copy files through it, twice the
//! limit of them live. Under shrinkalloc it completes: every byte checked
//! through the mount and, after the unmount, in the backing files; nothing
//! OOM-killed; the shrinker evicted, write-back ran on the work queue in a
//! NOFS context and the shrinker never ran in a lock holder; no mount is left.
//! The same daemon under glibc is OOM-killed. Needs root, `/dev/fuse`, `cc`,
//! `fusermount3` and libfuse3's headers: without them the harness says which
//! is missing and the test fails.

mod common;

/// The mounts of sa-fused in work directories of harness `pid`: another
/// run's (a test in another checkout, a run by hand) is none of this one's.
fn sa_fused_mounts(pid: u32) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours = format!("shrinkalloc-stress.{pid}.fuse.");
    text.lines().filter(|l| l.contains("fuse.sa-fused") && l.contains(&ours)).map(String::from).collect()
}

#[test]
fn fuse_daemon_survives_under_shrinkalloc_and_every_file_checks() {
    let run = common::run("fuse", "fuse", "shrinkalloc,glibc", &["--limit", "64M", "--duration", "8s", "--seed", "7"]);
    common::assert_survived_under_limit(&run, "shrinkalloc");
    let s = run.row("shrinkalloc");
    for counter in ["files", "verified", "copies", "fsyncs", "backing_verified", "evicted", "wb_items", "wb_blocks"] {
        assert!(s.field(counter) > 0, "no {counter}: {s:#?}");
    }
    for never in ["wb_not_nofs", "scans_nofs", "scans_in_lock_holder", "wb_errors", "wb_submit_failed"] {
        assert_eq!(s.field(never), 0, "{never} must stay 0: {s:#?}");
    }
    let limit = s.num("limit_bytes");
    assert!(s.field("written") > 2 * limit, "the cache never wanted more than the limit: {s:#?}");
    assert!(s.field("cache_peak") < limit, "the cache outgrew the limit: {s:#?}");
    let hard = s.field("hard_limit");
    assert!(hard > 0 && hard < limit, "sa-fused ran without a hard limit under the cgroup's: {s:#?}");
    let g = run.row("glibc");
    assert_eq!(g.col("outcome"), "oom_killed", "glibc's sa-fused was expected to be OOM-killed: {g:#?}");
    common::assert_cgroup_removed(g);
    assert_eq!(sa_fused_mounts(run.pid), Vec::<String>::new(), "a mount of sa-fused was left behind");
    assert_eq!(run.output.status.code(), Some(0), "the harness reports a failure");
    let _ = std::fs::remove_dir_all(&run.out_dir);
}
