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
use std::time::{Duration, Instant};

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

/// Replaces every entry of `blocks` with a filled block of `A` of `lo` to
/// `hi` bytes.
fn fill<A: Allocator>(blocks: &mut [*mut u8], rng: &mut Rng, lo: usize, hi: usize) {
    for p in blocks {
        *p = alloc_filled::<A>(rng.range(lo, hi));
    }
}

/// Frees a random 90% of `blocks` (live blocks of `A`), nulling them, so
/// that the survivors are scattered over every page.
fn free_nine_in_ten<A: Allocator>(blocks: &mut [*mut u8], rng: &mut Rng) {
    for p in blocks {
        if rng.range(0, 9) != 0 {
            // SAFETY: `p` is a live block of `A`, nulled so it is freed once.
            unsafe { A::free(std::mem::replace(p, std::ptr::null_mut())) };
        }
    }
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

    fill::<A>(&mut small, &mut rng, 16, 256);
    free_nine_in_ten::<A>(&mut small, &mut rng);
    let after_free_90 = proc_status_kib("VmRSS");
    fill::<A>(&mut large, &mut rng, 256, 4096);
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

/// Buffers of the spike workload and their sizes.
const SPIKE_BUFFERS: usize = 2_000;
const SPIKE_MIN: usize = 8 << 10;
const SPIKE_MAX: usize = 64 << 10;

/// How long the spike workload keeps up its small traffic after the spike.
const SPIKE_IDLE: Duration = Duration::from_secs(1);

/// The second workload, a daemon after a burst: allocate
/// [`SPIKE_BUFFERS`] buffers of 8-64 KiB (about 70 MiB) and fill them;
/// free a random 90% of them, so that most pages keep a survivor or two;
/// then keep up a small steady traffic for [`SPIKE_IDLE`] (every 2 ms,
/// 2,000 blocks of 16-256 B allocated and freed) without asking the
/// allocator for anything; finally purge. Reported in the fields of
/// [`Footprint`]: `after_free_90` right after the frees, `end` after the
/// second of small traffic, `end_purged` after the purge, `millis` the
/// time of the first two steps.
fn spike<A: Allocator>() -> Footprint {
    let mut rng = Rng::new(0x5eed_0004);
    let mut buffers = vec![std::ptr::dangling_mut::<u8>(); SPIKE_BUFFERS];
    let mut traffic = vec![std::ptr::dangling_mut::<u8>(); 2_000];
    let before = proc_status_kib("VmRSS");
    let start = Instant::now();
    fill::<A>(&mut buffers, &mut rng, SPIKE_MIN, SPIKE_MAX);
    free_nine_in_ten::<A>(&mut buffers, &mut rng);
    let millis = start.elapsed().as_millis() as u64;
    let after_free_90 = proc_status_kib("VmRSS");
    let idle = Instant::now();
    while idle.elapsed() < SPIKE_IDLE {
        fill::<A>(&mut traffic, &mut rng, 16, 256);
        for &p in &traffic {
            // SAFETY: a live block of `A`, freed once.
            unsafe { A::free(p) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let end = proc_status_kib("VmRSS");
    A::purge();
    let end_purged = proc_status_kib("VmRSS");
    for &p in &buffers {
        // SAFETY: each entry is null or a live block of `A`, freed once.
        unsafe { A::free(p) };
    }
    Footprint { before, peak: proc_status_kib("VmHWM"), after_free_90, end, end_purged, millis }
}

fn run_child(name: &str, spike_workload: bool) {
    macro_rules! run {
        ($a:ty) => {
            if spike_workload {
                spike::<$a>()
            } else {
                workload::<$a>()
            }
        };
    }
    let f = match name {
        Shrinkalloc::NAME => run!(Shrinkalloc),
        Mimalloc::NAME => run!(Mimalloc),
        Jemalloc::NAME => run!(Jemalloc),
        System::NAME => run!(System),
        _ => panic!("unknown allocator {name:?}; known: {NAMES:?}"),
    };
    println!("{}", f.to_line());
}

/// Runs a workload (`--spike`: the second one) for `name` in a child
/// process; `Err` says how it failed.
fn measure(name: &str, spike_workload: bool) -> Result<Footprint, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args = vec!["--child", name];
    if spike_workload {
        args.push("--spike");
    }
    let out = Command::new(exe).args(args).output().map_err(|e| e.to_string())?;
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

/// A field of [`Footprint`] that a ratio column divides, and its name.
type RatioColumn = (&'static str, fn(&Footprint) -> u64);

/// Prints `results` as a table: the fields of [`Footprint`] in MiB (the
/// `end` field under the name `end_name`), the time, then each column of
/// `ratios` against the peer's.
fn print_results(results: &[(&str, Result<Footprint, String>)], end_name: &str, ratios: &[RatioColumn]) {
    let peer = results.iter().find(|(n, _)| *n == PEER).and_then(|(_, r)| r.as_ref().ok());
    let mut header = format!("| allocator | before | peak | after freeing 90% | {end_name} | after purge | time ms |");
    for (name, _) in ratios {
        header += &format!(" {name} / {PEER} |");
    }
    println!("{header}");
    println!("|---|--:|--:|--:|--:|--:|--:|{}", "--:|".repeat(ratios.len()));
    for (name, r) in results {
        let f = match r {
            Ok(f) => f,
            Err(e) => {
                println!("| {name} | failed: {e} |{}", "|".repeat(6 + ratios.len()));
                continue;
            }
        };
        let mut row = format!(
            "| {name} | {} | {} | {} | {} | {} | {} |",
            mib(f.before),
            mib(f.peak),
            mib(f.after_free_90),
            mib(f.end),
            mib(f.end_purged),
            f.millis
        );
        for (_, field) in ratios {
            row += &match peer {
                Some(p) => format!(" {} |", ratio(field(f), field(p))),
                None => " - |".into(),
            };
        }
        println!("{row}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let name = args.get(i + 1).expect("--child needs an allocator name");
        run_child(name, args.iter().any(|a| a == "--spike"));
        return;
    }
    let results: Vec<_> = NAMES.iter().map(|&n| (n, measure(n, false))).collect();
    println!("RSS in MiB (whole process); ratios are to {PEER}.\n");
    let ratios: [RatioColumn; 3] =
        [("peak", |f| f.peak), ("after 90%", |f| f.after_free_90), ("after purge", |f| f.end_purged)];
    print_results(&results, "all freed", &ratios);
    let results: Vec<_> = NAMES.iter().map(|&n| (n, measure(n, true))).collect();
    println!(
        "\nA daemon after a burst: {SPIKE_BUFFERS} buffers of 8-64 KiB, 90% freed, then {} s of small \
         traffic. RSS in MiB (whole process); ratios are to {PEER}.\n",
        SPIKE_IDLE.as_secs()
    );
    let ratios: [RatioColumn; 2] = [("after 1 s", |f| f.end), ("after purge", |f| f.end_purged)];
    print_results(&results, "after 1 s of small traffic", &ratios);
}
