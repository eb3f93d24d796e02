//! Random allocation, free and realloc from several threads, with blocks
//! handed between threads and every block checked, with the live set at half
//! of a memory cgroup's limit: no corruption, no OOM kill, no refused
//! allocation.

mod common;

#[test]
fn churn_near_the_limit_corrupts_nothing_and_survives_on_shrinkalloc() {
    let run = common::run("churn", "churn", "shrinkalloc", &["--limit", "128M", "--duration", "4s", "--seed", "7"]);
    common::assert_survived_under_limit(&run, "shrinkalloc");
    let r = run.row("shrinkalloc");
    for counter in ["allocs", "frees", "reallocs", "transfers", "checks", "verified"] {
        assert!(r.field(counter) > 0, "no {counter}: {r:#?}");
    }
    assert_eq!(r.field("failed_charges"), 0, "allocations were refused: {r:#?}");
    assert_eq!(run.output.status.code(), Some(0), "the harness reports a failure");
    let _ = std::fs::remove_dir_all(&run.out_dir);
}
