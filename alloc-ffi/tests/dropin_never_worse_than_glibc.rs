//! A drop-in never does worse than the allocator it replaces (issue 15):
//! in a memory cgroup of 512 MiB a program touches 470 MiB under
//! shrinkalloc as it does under glibc (the lines derived from the group
//! start reclaim but refuse nothing); a single-threaded program in a
//! limited group stays single-threaded and may `unshare(CLONE_NEWUSER)`;
//! lowering the hard limit below what is committed, with and without a
//! shrinker, from one thread and from eight, never aborts; and
//! `SHRINKALLOC_STATS=1` reaches the stderr the process started with even
//! when the program closed it.
//!
//! The cgroup tests need root and the v1 memory controller (CI's machine):
//! groups are made as children of this process's own memory group.

mod common;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use common::{assert_success, compile, output, preloaded, scratch, stderr, stdout, Link};

const MIB: usize = 1 << 20;

/// A v1 memory cgroup made for one test, removed when dropped.
struct Group {
    dir: PathBuf,
}

impl Group {
    /// A child of this process's v1 memory group with `limit` bytes.
    fn new(name: &str, limit: usize) -> Group {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .expect("a v1 memory cgroup (the memory controller at /sys/fs/cgroup/memory, as on CI's machine)");
        let dir = PathBuf::from(format!("/sys/fs/cgroup/memory{path}/{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("cannot create {} (root needed): {e}", dir.display()));
        let g = Group { dir };
        fs::write(g.dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
        g
    }

    /// `cmd`, started inside the group (it joins between fork and exec).
    fn run(&self, mut cmd: Command) -> Output {
        let procs = CString::new(self.dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: the hook only makes system calls on a path made before
        // the fork; it never allocates.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            })
        };
        output(&mut cmd)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default().trim().to_string()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[test]
fn a_program_fills_its_cgroup_as_far_as_under_glibc() {
    let bin = compile("dropin.c", Link::Plain, &[]);
    let group = Group::new("sa-dropin-fill", 512 * MIB);
    for block in ["1048576", "1000"] {
        let glibc = group.run({
            let mut c = Command::new(&bin);
            c.args(["fill", "470", block]);
            c
        });
        assert_success(&glibc, &format!("470 MiB in {block}-byte blocks under glibc"));
        let ours = group.run({
            let mut c = preloaded(&bin);
            c.args(["fill", "470", block]).env("SHRINKALLOC_STATS", "1");
            c
        });
        assert_success(&ours, &format!("470 MiB in {block}-byte blocks under shrinkalloc"));
        assert!(stdout(&ours).contains("allocated 470 MiB"), "{}", stdout(&ours));
        // The group's lines were found and derived (so they were in force).
        assert!(stderr(&ours).contains("hard limit"), "{}", stderr(&ours));
        assert!(group.read("memory.oom_control").contains("oom_kill 0"), "{}", group.read("memory.oom_control"));
    }
}

#[test]
fn a_program_with_a_shrinker_is_refused_at_its_cgroup_limit_not_before() {
    // A program that registered a shrinker opted in: when its shrinkers
    // have nothing left it is refused rather than OOM-killed, but only at
    // the group's real limit, past the derived hard line (480 MiB here).
    let bin = compile("dropin.c", Link::Dynamic, &[]);
    let group = Group::new("sa-dropin-opted", 512 * MIB);
    let o = group.run({
        let mut c = Command::new(&bin);
        c.args(["fill-opted", "600", "1048576"]);
        c
    });
    assert_success(&o, "600 MiB wanted in a 512 MiB group with a shrinker registered");
    let out = stdout(&o);
    let mib: usize =
        out.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no figure in {out:?}"));
    assert!(out.starts_with("refused"), "{out}");
    assert!((470..512).contains(&mib), "refused after {mib} MiB: before the group's limit, or past it: {out}");
    assert!(group.read("memory.oom_control").contains("oom_kill 0"), "{}", group.read("memory.oom_control"));
}

#[test]
fn a_single_threaded_program_in_a_limited_cgroup_stays_single_threaded() {
    let bin = compile("dropin.c", Link::Plain, &[]);
    let group = Group::new("sa-dropin-unshare", 256 * MIB);
    // 64 MiB (the monitor once started after a few MiB) and 244 MiB (past
    // the group's soft and derived hard lines, 208 and 240 MiB).
    for mib in ["64", "244"] {
        let o = group.run({
            let mut c = preloaded(&bin);
            c.args(["unshare", mib]);
            c
        });
        assert_success(&o, &format!("{mib} MiB then unshare(CLONE_NEWUSER) under shrinkalloc in a 256 MiB group"));
        assert!(stdout(&o).contains("threads 1"), "{}", stdout(&o));
    }
}

#[test]
fn lowering_the_hard_limit_below_committed_never_aborts() {
    let bin = compile("dropin.c", Link::Dynamic, &[]);
    // Threads, a shrinker or not, the cache's block size in MiB (2: huge
    // blocks, which go back to the OS whichever thread frees them).
    for (threads, shrink, block) in
        [("1", "1", "1"), ("8", "1", "1"), ("8", "1", "2"), ("1", "0", "1"), ("8", "0", "1")]
    {
        let o = output(Command::new(&bin).args(["lower", threads, shrink, block]).env_remove("SHRINKALLOC_HARD_LIMIT"));
        let what =
            format!("160 MiB under 240 MiB committed, {threads} thread(s), shrinker {shrink}, {block} MiB blocks");
        assert_success(&o, &what);
        assert!(stdout(&o).contains("ok"), "{what}: {}", stdout(&o));
    }
}

#[test]
fn statistics_reach_the_original_stderr_after_the_program_closed_it() {
    let bin = compile("dropin.c", Link::Plain, &[]);
    let o = output(preloaded(&bin).arg("close-stderr").env("SHRINKALLOC_STATS", "1"));
    assert_success(&o, "close-stderr");
    assert!(stderr(&o).contains("shrinkalloc ") && stderr(&o).contains("reclaim:"), "{}", stderr(&o));

    let file = scratch("dropin").join("replaced-stderr");
    let o = output(preloaded(&bin).arg("replace-stderr").arg(&file).env("SHRINKALLOC_STATS", "1"));
    assert_success(&o, "replace-stderr");
    assert!(stderr(&o).contains("reclaim:"), "{}", stderr(&o));
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(text, "the program's own line\n", "the statistics went into the program's own file");

    // Without the setting, no descriptor is kept: the program's next
    // descriptor numbers are its own.
    let o = output(preloaded(&bin).arg("close-stderr"));
    assert_success(&o, "close-stderr without statistics");
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}
