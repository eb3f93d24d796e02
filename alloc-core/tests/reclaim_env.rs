//! The limits are read from `SHRINKALLOC_SOFT_LIMIT` and
//! `SHRINKALLOC_HARD_LIMIT` (bytes, `512M`, `2G`); a bad value is reported
//! once on stderr and ignored, never a crash. The environment is read on the
//! first allocation, so each case runs this test binary again as a child
//! with the variables set, and checks what the child saw and printed.

mod common;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Set in the child: print the limits it sees and exit.
const CHILD: &str = "SHRINKALLOC_TEST_ENV_CHILD";

/// The test that prints the limits, run as a child.
const PRINTER: &str = "env_limits_are_parsed_and_bad_values_reported_once";

fn run_child(soft: &str, hard: &str) -> (String, String) {
    common::rerun_self(PRINTER, &[(CHILD, "1"), ("SHRINKALLOC_SOFT_LIMIT", soft), ("SHRINKALLOC_HARD_LIMIT", hard)])
}

#[test]
fn env_limits_are_parsed_and_bad_values_reported_once() {
    use shrinkalloc::reclaim::{hard_limit, soft_limit};
    if std::env::var_os(CHILD).is_some() {
        println!("LIMITS soft={:?} hard={:?}", soft_limit(), hard_limit());
        return;
    }
    let (out, err) = run_child("512M", "2G");
    assert!(out.contains(&format!("LIMITS soft=Some({}) hard=Some({})", 512usize << 20, 2usize << 30)), "{out}");
    assert!(!err.contains("ignoring"), "{err}");

    let (out, _) = run_child("1048576", "0");
    assert!(out.contains("LIMITS soft=Some(1048576) hard=None"), "{out}");

    let (out, err) = run_child("12 parsecs", "-1");
    assert!(out.contains("LIMITS soft=None hard=None"), "{out}");
    assert_eq!(err.matches("ignoring bad value of SHRINKALLOC_SOFT_LIMIT").count(), 1, "{err}");
    assert_eq!(err.matches("ignoring bad value of SHRINKALLOC_HARD_LIMIT").count(), 1, "{err}");
}

/// A misspelt variable is reported once, by name, and changes nothing.
#[test]
fn unknown_variables_are_reported() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let (stdout, stderr) = common::rerun_self(
        PRINTER,
        &[(CHILD, "1"), ("SHRINKALLOC_HARD_LIMT", "1G"), ("SHRINKALLOC_MONITOR", "sometimes")],
    );
    assert!(stdout.contains("hard=None"), "the misspelt limit took effect: {stdout}");
    assert_eq!(stderr.matches("ignoring unknown variable SHRINKALLOC_HARD_LIMT").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("ignoring bad value of SHRINKALLOC_MONITOR (auto|on|off)").count(), 1, "{stderr}");
    assert!(!stderr.contains("SHRINKALLOC_TEST_"), "the tests' own variables are not reported: {stderr}");
}
