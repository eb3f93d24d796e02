//! systemd's memory pressure convention: with `MEMORY_PRESSURE_WATCH`
//! naming a Unix socket, the monitor connects, writes the base64-decoded
//! `MEMORY_PRESSURE_WRITE`, and treats data arriving on it as pressure:
//! background reclaim runs, recorded under the `systemd` trigger, and the
//! cache's shrinker gives memory back. `/dev/null` turns the watch off and
//! a bad base64 value is reported once, in the statistics' sources, never
//! on stderr. No cgroup or root needed: each case runs in a child process,
//! since the environment is read when the monitor starts.

mod pressure_support;
mod reclaim_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use pressure_support::{report, run_child, scratch_dir, CHILD};
use reclaim_support::{wait_until, Cache, CacheShrinker, Raw, BLOCK};
use shrinkalloc::reclaim::{self, register, Needs, ShrinkerOptions, Source, SourceState, Trigger};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const TEST: &str = "systemd_watch_connects_writes_the_trigger_and_raises_reclaim";
/// `some 123000 2000000\0`, the form systemd writes.
const WRITE_B64: &str = "c29tZSAxMjMwMDAgMjAwMDAwMAA=";
const WRITE_RAW: &[u8] = b"some 123000 2000000\0";

fn systemd_state() -> SourceState {
    let s = reclaim::stats();
    s.sources.iter().find(|x| x.source == Source::SystemdWatch).unwrap().state
}

#[test]
fn systemd_watch_connects_writes_the_trigger_and_raises_reclaim() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }
    let sock = scratch_dir().join("watch.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let sock_path = sock.to_str().unwrap().to_owned();
    // The peer: accept the monitor's connection, check what it wrote,
    // report pressure once.
    let peer = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(_) if start.elapsed() < Duration::from_secs(10) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("the monitor never connected: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = vec![0u8; WRITE_RAW.len()];
        conn.read_exact(&mut got).unwrap();
        let connected_after = start.elapsed();
        conn.write_all(b"pressure").unwrap();
        // Keep the connection open until the child is done with it.
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        (got, connected_after)
    });
    let env = [
        ("MEMORY_PRESSURE_WATCH", Some(sock_path.as_str())),
        ("MEMORY_PRESSURE_WRITE", Some(WRITE_B64)),
        ("SHRINKALLOC_CGROUP", Some("off")),
    ];
    let out = run_child(TEST, "socket", &env, None, Duration::from_secs(30));
    let (got, connected_after) = peer.join().unwrap();
    eprintln!("socket child in {:?} (connected after {connected_after:?}):\n{}", out.elapsed, out.stdout);
    assert!(out.status.success(), "{}", out.output());
    assert_eq!(got, WRITE_RAW, "the monitor writes MEMORY_PRESSURE_WRITE decoded");
    let r = out.report();
    assert_eq!(r.get("state"), Some("Active"), "{}", out.output());
    assert!(r.num("events") >= 1, "{}", out.output());
    assert!(r.num("passes") >= 1, "the event raised no pass: {}", out.output());
    assert!(r.num("freed") >= 1, "the shrinker gave nothing back: {}", out.output());
    let _ = std::fs::remove_file(&sock);

    // `/dev/null`: off, said once in the statistics.
    let env = [("MEMORY_PRESSURE_WATCH", Some("/dev/null")), ("SHRINKALLOC_CGROUP", Some("off"))];
    let out = run_child(TEST, "state", &env, None, Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.output());
    assert_eq!(out.report().get("state"), Some("Off"), "{}", out.output());
    assert_eq!(out.stdout.matches("source systemd watch: off").count(), 1, "{}", out.output());

    // Bad base64: failed with EINVAL, said once in the statistics, never on stderr.
    let env = [
        ("MEMORY_PRESSURE_WATCH", Some(sock_path.as_str())),
        ("MEMORY_PRESSURE_WRITE", Some("not base64!")),
        ("SHRINKALLOC_CGROUP", Some("off")),
    ];
    let out = run_child(TEST, "state", &env, None, Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.output());
    assert_eq!(out.report().get("state"), Some("Failed(22)"), "{}", out.output());
    assert_eq!(out.stdout.matches("source systemd watch: failed (errno 22)").count(), 1, "{}", out.output());
    assert!(!out.stderr.contains("systemd") && !out.stderr.contains("MEMORY_PRESSURE"), "{}", out.output());
    pressure_support::remove_scratch_dir();
}

fn child(mode: &str) {
    // Registering a shrinker starts the monitor at the next slow path: a
    // new block's charge, once the cache is full, so that the peer's one
    // report of pressure never finds it still empty.
    let cache = Cache::new(Needs::NONE);
    assert!(cache.fill(16));
    let h = register(CacheShrinker(cache.clone()), ShrinkerOptions::new("systemd-cache").batch(1));
    drop(Raw::try_new(BLOCK));
    let settled = wait_until(Duration::from_secs(5), || systemd_state() != SourceState::NotStarted);
    assert!(settled, "the monitor never set the watch up: {}", reclaim::stats());
    if mode == "socket" {
        let raised = wait_until(Duration::from_secs(10), || {
            reclaim::stats().passes_by_trigger[Trigger::SystemdWatch as usize] > 0 && h.stats().objects_freed > 0
        });
        assert!(raised, "no reclaim after the watch reported pressure: {}", reclaim::stats());
    }
    let s = reclaim::stats();
    let src = s.sources.iter().find(|x| x.source == Source::SystemdWatch).unwrap();
    report(&[
        ("state", format!("{:?}", src.state).replace(' ', "")),
        ("events", src.events.to_string()),
        ("passes", s.passes_by_trigger[Trigger::SystemdWatch as usize].to_string()),
        ("freed", h.stats().objects_freed.to_string()),
        ("held", (cache.len() * BLOCK).to_string()),
    ]);
    // Printed twice: each print says it once.
    println!("{s}");
    let _ = reclaim::stats().to_string();
}
