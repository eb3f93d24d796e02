//! The deadlock scenario under a memory cgroup: threads that hold the
//! filesystem lock in NOFS scopes allocate past the hard limit while the
//! inode cache's shrinker needs that lock. It must complete (a hang ends the
//! child through its watchdog, or the harness's deadline), reclaim in those
//! threads must skip the FS shrinker, and the inode cache must still be
//! shrunk by threads allowed to.

mod common;

#[test]
fn nofs_lock_holders_under_pressure_complete_and_never_enter_the_fs_shrinker() {
    let run = common::run("nofs", "nofs", "shrinkalloc", &["--limit", "128M", "--duration", "5s", "--seed", "7"]);
    common::assert_survived_under_limit(&run, "shrinkalloc");
    let r = run.row("shrinkalloc");
    assert_eq!(r.field("fs_scans_in_nofs"), 0, "the FS shrinker ran in a NOFS thread: {r:#?}");
    assert!(r.field("fs_freed") > 0, "nobody shrank the inode cache: {r:#?}");
    assert!(
        r.field("fs_skipped") > 0,
        "reclaim never ran in a NOFS lock holder, so the dangerous path was not exercised: {r:#?}"
    );
    assert!(r.field("journals") > 0 && r.field("verified") > 0, "{r:#?}");
    assert_eq!(run.output.status.code(), Some(0), "the harness reports a failure");
    let _ = std::fs::remove_dir_all(&run.out_dir);
}
