//! Ctrl-C while sa-fused is mounted and busy: the harness kills its driver,
//! the daemon dies with it, and the mount it leaves (a killed FUSE daemon's
//! mount stays, dead) is unmounted; the cgroup and the work directory are
//! removed, and the harness exits 130.

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Mount points of sa-fused in work directories of harness `pid`.
fn sa_fused_mount_points(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let ours = format!("shrinkalloc-stress.{pid}.fuse.");
    let points = text.lines().filter(|l| l.contains("fuse.sa-fused")).filter_map(|l| l.split(' ').nth(4));
    points.filter(|p| p.contains(&ours)).map(PathBuf::from).collect()
}

/// The ops count of a progress line (`... ops 1234 ...`), 0 if none.
fn ops(line: &str) -> u64 {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "ops").and_then(|_| words.next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Ends the harness if the test fails before it does.
struct Harness(Child);

impl Drop for Harness {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn sigint_while_mounted_unmounts_and_removes_everything() {
    let out = std::env::temp_dir().join(format!("shrinkalloc-stress-fuse-interrupt-{}", std::process::id()));
    let (child, rx) = common::spawn_echoing("fuse", &out);
    let mut harness = Harness(child);
    let pid = harness.0.id();
    // Wait until files are going through the mount.
    let started = Instant::now();
    let mut group = None;
    let mut busy = false;
    while !busy && started.elapsed() < Duration::from_secs(60) {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("runs in cgroup ") => {
                group = line.split("runs in cgroup ").nth(1).map(PathBuf::from);
            }
            Ok(line) => busy = line.starts_with("fuse shrinkalloc") && ops(&line) > 0,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the harness ended before sa-fused was busy"),
        }
    }
    assert!(busy, "sa-fused was not busy within 60 s");
    let mounts = sa_fused_mount_points(pid);
    assert_eq!(mounts.len(), 1, "expected sa-fused mounted once while busy: {mounts:?}");
    let workdir = mounts[0].parent().expect("the mount point is in the work directory").to_path_buf();
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = harness.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = harness.0.kill();
            panic!("the harness did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "an interrupted run exits 130");
    assert_eq!(sa_fused_mount_points(pid), Vec::<PathBuf>::new(), "the mount was left behind");
    assert!(!workdir.exists(), "work directory {} left behind", workdir.display());
    if let Some(g) = group {
        assert!(!g.exists(), "cgroup {} left behind after SIGINT", g.display());
    }
    let _ = std::fs::remove_dir_all(&out);
}
