//! A process that goes idle still gives memory back: a thread allocates and
//! frees 12 MiB of small blocks and exits (its segments stay cached, still
//! committed), then nothing allocates at all;
//! the pressure monitor thread runs the decay's global tick, which collects
//! the exited thread's heap and purges its pages after the purge delay.
//! Without that tick the memory would wait for some thread's next
//! allocation slow path. Runs as a child with the monitor forced on and a
//! short purge delay (the environment is read once, at the first
//! allocation).

mod common;

use std::thread;
use std::time::Duration;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const CHILD: &str = "SHRINKALLOC_TEST_IDLE_CHILD";
const MIB: usize = 1 << 20;

fn monitor_running() -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        let comm = std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap_or_default();
        comm.trim() == "sa-monitor"
    })
}

#[test]
fn an_idle_process_gives_memory_back() {
    if std::env::var_os(CHILD).is_none() {
        let env = [(CHILD, "1"), ("SHRINKALLOC_MONITOR", "on"), ("SHRINKALLOC_PURGE_DELAY_MS", "200")];
        let (stdout, stderr) = common::rerun_self("an_idle_process_gives_memory_back", &env);
        assert!(stdout.contains("IDLE OK"), "{stdout}\n{stderr}");
        return;
    }
    thread::spawn(|| {
        let blocks: Vec<Box<[u8; 1024]>> = (0..12 * 1024).map(|_| Box::new([7u8; 1024])).collect();
        drop(std::hint::black_box(blocks));
    })
    .join()
    .unwrap();
    // The thread names itself once it runs: give a loaded machine time.
    let started = (0..200).any(|_| {
        if monitor_running() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
        false
    });
    assert!(started, "the monitor did not start (SHRINKALLOC_MONITOR=on)");
    let busy = shrinkalloc::stats().committed;
    assert!(busy >= 12 * MIB, "the blocks were never committed: {busy}");
    // Idle: this thread sleeps without allocating; nothing else runs.
    thread::sleep(Duration::from_millis(2000));
    let idle = shrinkalloc::stats().committed;
    assert!(idle + 8 * MIB <= busy, "idle for 2 s (10 purge delays), committed stayed at {idle} (was {busy})");
    println!("IDLE OK {busy} -> {idle}");
}
