//! Ctrl-C in the middle of a run: the harness kills its child, removes the
//! child's cgroup, and exits 130.

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn sigint_mid_run_kills_the_child_and_removes_its_cgroup() {
    let out = std::env::temp_dir().join(format!("shrinkalloc-stress-interrupt-{}", std::process::id()));
    let (mut harness, rx) = common::spawn_echoing("cache", &out);
    // Wait until the child runs (in its cgroup, when there is one).
    let started = Instant::now();
    let mut group = None;
    while started.elapsed() < Duration::from_secs(20) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("runs in cgroup ") => {
                group = line.split("runs in cgroup ").nth(1).map(PathBuf::from);
            }
            Ok(line) if line.starts_with("cache shrinkalloc") && line.contains("ops") => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the harness ended before its child ran"),
        }
    }
    if !common::cgroup_optional() {
        assert!(group.as_ref().is_some_and(|g| g.exists()), "no cgroup was announced: {group:?}");
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(harness.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = harness.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = harness.kill();
            panic!("the harness did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "an interrupted run exits 130");
    if let Some(g) = group {
        assert!(!g.exists(), "cgroup {} left behind after SIGINT", g.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}
