//! The command line: `list` names every scenario and allocator; unknown
//! scenarios, allocators and options are refused with exit status 2.

mod common;

use std::process::Command;

fn harness(args: &[&str]) -> std::process::Output {
    Command::new(common::EXE).args(args).output().expect("cannot start the harness")
}

#[test]
fn list_names_every_scenario_and_allocator() {
    let out = harness(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["cache", "churn", "nofs", "shrinkalloc-noshrink", "glibc", "jemalloc", "mimalloc", "tcmalloc"] {
        assert!(text.contains(name), "`list` does not mention {name}:\n{text}");
    }
}

#[test]
fn unknown_scenarios_allocators_and_options_exit_2() {
    for args in [
        &["run", "nosuch"][..],
        &["run", "cache", "--allocators", "ptmalloc"],
        &["run", "cache", "--limit", "lots"],
        &["demo", "--frobnicate", "1"],
        &["child", "cache", "--allocator", "glibc"],
    ] {
        assert_eq!(harness(args).status.code(), Some(2), "{args:?} was accepted");
    }
}
