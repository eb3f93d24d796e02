//! Resident memory of a fragmenting workload, for each allocator in a child
//! process of its own (this binary run again with `--child NAME`), so that
//! one allocator's leftovers never count against another.
//!
//! The workload, the same seeded sequence for every allocator:
//!
//! 1. allocate 1,000,000 blocks of 16 to 256 bytes and fill each one;
//! 2. free a random 90% of them, leaving the survivors scattered over
//!    every page;
//! 3. allocate 60,000 blocks of 256 bytes to 4 KiB and fill each one: about
//!    as many bytes as step 2 freed, so an allocator that can reuse that
//!    memory across size classes keeps its peak low;
//! 4. free everything, then ask the allocator to give memory back
//!    ([`Allocator::purge`]).
//!
//! Reported: the peak RSS (`VmHWM`), the RSS after step 2, after step 4
//! before and after the purge, and the time steps 1 to 4 took. All RSS
//! figures are the whole process's, including about 10 MiB of bookkeeping
//! present before step 1 (the `before` column).

use std::process::Command;
use std::time::Instant;

use shrinkalloc_benches::{Allocator, Jemalloc, Mimalloc, Rng, Shrinkalloc, System, NAMES, PEER};

const SMALL_BLOCKS: usize = 1_000_000;
const LARGE_BLOCKS: usize = 60_000;

/// One child's measurements, RSS in KiB.
struct Footprint {
    before: u64,
    peak: u64,
    after_free_90: u64,
    end: u64,
    end_purged: u64,
    millis: u64,
}

impl Footprint {
    fn to_line(&self) -> String {
        format!("{} {} {} {} {} {}", self.before, self.peak, self.after_free_90, self.end, self.end_purged, self.millis)
    }

    fn from_line(line: &str) -> Option<Self> {
        let v: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
        let [before, peak, after_free_90, end, end_purged, millis] = v[..] else {
            return None;
        };
        Some(Footprint { before, peak, after_free_90, end, end_purged, millis })
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Allocates `size` bytes from `A` and fills them, as a program would.
fn alloc_filled<A: Allocator>(size: usize) -> *mut u8 {
    let p = A::malloc(size);
    assert!(!p.is_null(), "{} returned null for {size} bytes", A::NAME);
    // SAFETY: `p` is a live block of `size` bytes.
    unsafe { p.write_bytes(0xa5, size) };
    p
}

fn workload<A: Allocator>() -> Footprint {
    let mut rng = Rng::new(0x5eed_0003);
    // Filled with a non-null placeholder, which every step overwrites before
    // use: a null fill would come from `calloc` unwritten, and these pages
    // must be resident before the baseline is read.
    let placeholder = std::ptr::dangling_mut::<u8>();
    let mut small = vec![placeholder; SMALL_BLOCKS];
    let mut large = vec![placeholder; LARGE_BLOCKS];
    let before = proc_status_kib("VmRSS");
    let start = Instant::now();

    for p in &mut small {
        *p = alloc_filled::<A>(rng.range(16, 256));
    }
    for p in &mut small {
        if rng.range(0, 9) != 0 {
            // SAFETY: `p` is a live block of `A`, nulled so it is freed once.
            unsafe { A::free(std::mem::replace(p, std::ptr::null_mut())) };
        }
    }
    let after_free_90 = proc_status_kib("VmRSS");
    for p in &mut large {
        *p = alloc_filled::<A>(rng.range(256, 4096));
    }
    for &p in small.iter().chain(&large) {
        // SAFETY: each entry is null or a live block of `A`, freed once.
        unsafe { A::free(p) };
    }
    let millis = start.elapsed().as_millis() as u64;
    let end = proc_status_kib("VmRSS");
    A::purge();
    Footprint {
        before,
        peak: proc_status_kib("VmHWM"),
        after_free_90,
        end,
        end_purged: proc_status_kib("VmRSS"),
        millis,
    }
}

fn run_child(name: &str) {
    let f = match name {
        Shrinkalloc::NAME => workload::<Shrinkalloc>(),
        Mimalloc::NAME => workload::<Mimalloc>(),
        Jemalloc::NAME => workload::<Jemalloc>(),
        System::NAME => workload::<System>(),
        _ => panic!("unknown allocator {name:?}; known: {NAMES:?}"),
    };
    println!("{}", f.to_line());
}

/// Runs the workload for `name` in a child process; `Err` says how it failed.
fn measure(name: &str) -> Result<Footprint, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe).args(["--child", name]).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{} {}", out.status, stderr.trim()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Footprint::from_line(stdout.trim()).ok_or_else(|| format!("bad child output {stdout:?}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ratio(x: u64, peer: u64) -> String {
    format!("{:.2}", x as f64 / peer as f64)
}

fn print_table(results: &[(&str, Result<Footprint, String>)]) {
    let peer = results.iter().find(|(n, _)| *n == PEER).and_then(|(_, r)| r.as_ref().ok());
    println!("RSS in MiB (whole process); ratios are to {PEER}.\n");
    println!(
        "| allocator | before | peak | after freeing 90% | all freed | after purge \
         | time ms | peak / {PEER} | after 90% / {PEER} | after purge / {PEER} |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (name, r) in results {
        let f = match r {
            Ok(f) => f,
            Err(e) => {
                println!("| {name} | failed: {e} |||||||||");
                continue;
            }
        };
        let ratios = match peer {
            Some(p) => {
                [ratio(f.peak, p.peak), ratio(f.after_free_90, p.after_free_90), ratio(f.end_purged, p.end_purged)]
            }
            None => ["-".into(), "-".into(), "-".into()],
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            mib(f.before),
            mib(f.peak),
            mib(f.after_free_90),
            mib(f.end),
            mib(f.end_purged),
            f.millis,
            ratios[0],
            ratios[1],
            ratios[2]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        run_child(args.get(i + 1).expect("--child needs an allocator name"));
        return;
    }
    let results: Vec<_> = NAMES.iter().map(|&n| (n, measure(n))).collect();
    print_table(&results);
}
