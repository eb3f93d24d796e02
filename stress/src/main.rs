//! `shrinkalloc-stress`: runs workloads in child processes inside memory
//! cgroups, under shrinkalloc and under other allocators side by side, and
//! reports who survived, how close to the limit each came, and how fast.
//!
//! The parent parses the command line, probes for memory cgroups, runs one
//! child per allocator in turn (`runner.rs`), and writes the table, the CSV
//! files and the chart (`report.rs`, `chart.rs`). A child is this same
//! binary, re-executed as `child <scenario> ...` (hidden), whose allocator is
//! picked by the environment (`alloc_switch.rs`, `allocator.rs`) and whose
//! workload is one of `scenario/`. The parent never allocates much, and its
//! own allocator does not matter: it is outside every cgroup it makes.

mod alloc_switch;
mod allocator;
mod cgroup;
mod chart;
mod interrupt;
mod oracle;
mod report;
mod runner;
mod scenario;
mod status;
mod trace;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use allocator::Allocator;
use runner::{Limiter, Outcome, Plan, RunResult};

#[global_allocator]
static GLOBAL: alloc_switch::Switch = alloc_switch::Switch;

const USAGE: &str = "\
usage: shrinkalloc-stress demo [options]
       shrinkalloc-stress run <scenario> [--allocators a,b,..] [options]
       shrinkalloc-stress list
       shrinkalloc-stress replay TRACE --limit SIZE

  demo       the `cache` scenario under a 256 MiB memory cgroup, shrinkalloc against
             the other allocators installed, 20 s; ends with a table and a chart
  run        one scenario under the given allocators, one child after another
  list       the scenarios and allocators
  replay     a trace a traced run left (trace-<allocator>.bin) through the oracle again, at
             the given limit: hits against the ideal LRU's, and the LRU's hits at other budgets

options:
  --allocators a,b,..   shrinkalloc, shrinkalloc-noshrink, glibc, jemalloc, mimalloc
                        (default: the scenario's own list)
  --limit SIZE          memory limit per child, e.g. 256M, 1G (default 256M)
  --demand SIZE         what the cache scenarios would hold unconstrained
                        (default: cache 4x the limit, cache-c 1G)
  --duration TIME       how long each child runs, e.g. 20s, 1500ms, 2m (default: per scenario)
  --seed N              seed of every random choice (default: from the clock, printed)
  --threads N           worker threads per child (default 4)
  --out DIR             where results.csv, usage.csv, chart.svg (and the traces) go
                        (default <cargo target dir>/shrinkalloc-stress/<scenario>)
  --require-cgroup      fail instead of falling back when no memory cgroup can be made

exit status: 0 when every run ended as its scenario expects, 1 otherwise (or a
cgroup was left behind), 2 on bad usage or a missing cgroup with --require-cgroup,
130 when interrupted.";

/// Parsed options of `demo` and `run`.
struct Options {
    allocators: Option<Vec<Allocator>>,
    limit: usize,
    demand: Option<usize>,
    duration: Option<Duration>,
    seed: Option<u64>,
    threads: usize,
    out: Option<PathBuf>,
    require_cgroup: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("child") => match args.get(1) {
            Some(name) => scenario::child_main(name, &args[2..]),
            None => usage_error("child needs a scenario"),
        },
        None | Some("demo") => parse_options(args.get(1..).unwrap_or(&[])).map_or_else(|e| usage_error(&e), demo),
        Some("run") => match args.get(1).map(|n| (n, scenario::find(n))) {
            Some((_, Some(s))) => parse_options(&args[2..]).map_or_else(|e| usage_error(&e), |o| run(s, o)),
            Some((name, None)) => usage_error(&format!("unknown scenario {name:?} (see `list`)")),
            None => usage_error("run needs a scenario (see `list`)"),
        },
        Some("list") => {
            list();
            0
        }
        Some("replay") => match args.get(1..) {
            Some([path, flag, limit]) if flag == "--limit" => {
                match shrinkalloc::options::parse_size(limit.as_bytes()) {
                    Some(limit) if limit > 0 => replay(Path::new(path), limit),
                    _ => usage_error(&format!("bad --limit {limit:?}")),
                }
            }
            _ => usage_error("replay needs a trace and --limit SIZE"),
        },
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            0
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("shrinkalloc-stress: {msg}\n\n{USAGE}");
    scenario::EXIT_USAGE
}

fn list() {
    println!("scenarios:");
    for s in scenario::ALL {
        let defaults: Vec<&str> = s.default_allocators.iter().map(|a| a.name()).collect();
        println!("  {:<8} {}", s.name, s.about);
        println!("           default allocators {}, {} s", defaults.join(","), s.default_duration.as_secs());
    }
    println!("allocators:");
    for a in allocator::ALL {
        let state = a.available().err().map_or(String::new(), |why| format!("  (unavailable: {why})"));
        println!("  {}{state}", a.name());
    }
}

/// `replay`: the oracle's figures of a trace file at `limit`, and the
/// exact LRU's hits at budgets around the oracle's.
fn replay(path: &Path, limit: usize) -> i32 {
    let records = match std::fs::read(path).map_err(|e| e.to_string()).and_then(|b| trace::parse(&b)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shrinkalloc-stress: cannot read the trace {}: {e}", path.display());
            return 1;
        }
    };
    let o = oracle::replay(&records, limit * oracle::BUDGET_PERCENT / 100);
    println!("{}: {} records, {} gets, {} hits", path.display(), o.records, o.gets, o.hits);
    let ratio = o.ratio().map_or("-".into(), |r| format!("{r:.3}"));
    println!(
        "ideal (exact LRU of {}% of {}): {} hits; hits/ideal {ratio}",
        oracle::BUDGET_PERCENT,
        report::mib(limit),
        o.ideal
    );
    match oracle::equivalent_budget(&records, o.hits, 2 * limit, limit / 200) {
        Some(b) => {
            println!("the run's hits are those of an exact LRU of {:.1}% of the limit", b as f64 * 100.0 / limit as f64)
        }
        None => println!("the run's hits are more than an exact LRU of twice the limit gets"),
    }
    for percent in [40, 50, 60, 65, 70, 75, 80, 90, 100] {
        let at = oracle::replay(&records, limit * percent / 100).ideal;
        println!(
            "  exact LRU of {percent:>3}% of the limit: {at:>10} hits, {:.3} of ideal",
            at as f64 / o.ideal.max(1) as f64
        );
    }
    0
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        allocators: None,
        limit: 256 << 20,
        demand: None,
        duration: None,
        seed: None,
        threads: 4,
        out: None,
        require_cgroup: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--require-cgroup" {
            o.require_cgroup = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--allocators" => {
                let list = value
                    .split(',')
                    .map(|n| Allocator::parse(n.trim()).ok_or_else(|| format!("unknown allocator {n:?}")));
                o.allocators = Some(list.collect::<Result<_, _>>()?);
            }
            "--limit" => {
                o.limit = shrinkalloc::options::parse_size(value.as_bytes())
                    .filter(|&l| l >= 16 << 20)
                    .ok_or_else(|| format!("bad --limit {value:?} (a size of at least 16M, e.g. 256M)"))?
            }
            "--demand" => {
                o.demand = Some(
                    shrinkalloc::options::parse_size(value.as_bytes())
                        .filter(|&d| d >= 1 << 20)
                        .ok_or_else(|| format!("bad --demand {value:?} (a size of at least 1M, e.g. 1G)"))?,
                )
            }
            "--duration" => {
                o.duration = Some(parse_duration(value).ok_or_else(|| format!("bad --duration {value:?}"))?)
            }
            "--seed" => o.seed = Some(value.parse().map_err(|_| format!("bad --seed {value:?}"))?),
            "--threads" => o.threads = value.parse().ok().filter(|&t| t > 0).ok_or("bad --threads")?,
            "--out" => o.out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag:?}")),
        }
    }
    Ok(o)
}

/// `20s`, `1500ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        _ => return None,
    };
    (secs > 0.0 && secs < 86_400.0).then(|| Duration::from_secs_f64(secs))
}

/// The default output directory: next to the build, in cargo's target dir.
fn default_out(name: &str) -> PathBuf {
    let target = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.parent()?.to_path_buf();
        dir.join("CACHEDIR.TAG").exists().then_some(dir)
    });
    target.unwrap_or_else(|| PathBuf::from("target")).join("shrinkalloc-stress").join(name)
}

fn demo(mut o: Options) -> i32 {
    let s = &scenario::cache::SCENARIO;
    if o.allocators.is_none() {
        let wanted = [Allocator::ShrinkAlloc, Allocator::ShrinkAllocNoShrink, Allocator::Glibc];
        let mut list = wanted.to_vec();
        for a in [Allocator::Jemalloc, Allocator::Mimalloc] {
            match a.available() {
                Ok(()) => list.push(a),
                Err(why) => println!("(leaving {} out of the demo: {why})", a.name()),
            }
        }
        o.allocators = Some(list);
    }
    o.out = o.out.or_else(|| Some(default_out("demo")));
    println!(
        "shrinkalloc demo: a key-value cache daemon (4 request threads, values 512 B..16 KiB, keys without \
         bound)\nwhose cache grows to 4x its memory limit. Under shrinkalloc its cache is behind a shrinker; \
         the same\nprogram runs under each allocator in turn, each in its own memory cgroup.\n"
    );
    let code = run(s, o);
    if code != scenario::EXIT_USAGE {
        println!(
            "\nWhat happened: the cache outgrows the limit under every allocator. glibc, jemalloc and mimalloc \
             give the\nprocess memory until the kernel's OOM killer ends it; shrinkalloc without shrinkers refuses \
             an allocation\nat its hard limit; shrinkalloc with the cache's shrinker evicts old entries as the limit \
             nears and keeps\nserving, under the limit, to the end."
        );
    }
    code
}

fn run(s: &'static scenario::Scenario, o: Options) -> i32 {
    interrupt::install();
    let limiter = Limiter::probe();
    if let Limiter::Fallback(reason) = &limiter {
        eprintln!("{}", Limiter::fallback_banner(reason));
        if o.require_cgroup {
            eprintln!("shrinkalloc-stress: --require-cgroup: giving up");
            return scenario::EXIT_USAGE;
        }
    }
    let out = o.out.unwrap_or_else(|| default_out(s.name));
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("shrinkalloc-stress: ERROR: cannot make {}: {e}", out.display());
        return 1;
    }
    let plan = Plan {
        scenario: s,
        limit: o.limit,
        duration: o.duration.unwrap_or(s.default_duration),
        seed: o.seed.unwrap_or_else(clock_seed),
        threads: o.threads,
        allocators: o.allocators.unwrap_or_else(|| s.default_allocators.to_vec()),
        demand: o.demand,
        out,
    };
    print_header(&plan, &limiter);
    let mut progress = report::Progress::new();
    let results = runner::run_plan(&plan, &limiter, &mut progress);
    println!("\n{}", report::table(&plan, &results));
    let usage = match limiter {
        Limiter::Cgroup(_) => "memory usage of the child's cgroup",
        Limiter::Fallback(_) => "resident set of the child (no cgroup)",
    };
    if let Err(e) = write_outputs(&plan.out, &plan, &results, usage) {
        eprintln!("shrinkalloc-stress: ERROR: cannot write to {}: {e}", plan.out.display());
        return 1;
    }
    exit_code(&results)
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    verify::mix(nanos as u64 ^ u64::from(std::process::id())) % 1_000_000
}

fn print_header(plan: &Plan, limiter: &Limiter) {
    let names: Vec<&str> = plan.allocators.iter().map(|a| a.name()).collect();
    println!("scenario {}: {}", plan.scenario.name, plan.scenario.about);
    println!("limit {} per child, enforced by {}", report::mib(plan.limit), limiter.describe());
    if let Some(d) = plan.demand {
        println!("demand {} (the limit is {:.0}% of it)", report::mib(d), plan.limit as f64 * 100.0 / d as f64);
    }
    if plan.scenario.traced {
        println!(
            "each child's cache requests are traced and replayed through an exact LRU of {}% of the limit \
             (hits/ideal); band: usage over the last three quarters of the duration",
            oracle::BUDGET_PERCENT
        );
    }
    if plan.allocators.iter().any(|a| a.is_shrinkalloc()) {
        match limiter {
            Limiter::Cgroup(_) => println!(
                "shrinkalloc children find their limits in their cgroup (no SHRINKALLOC_*_LIMIT in their environment)"
            ),
            Limiter::Fallback(_) => {
                let (hard, soft) = allocator::shrinkalloc_limits(plan.limit);
                println!(
                    "shrinkalloc children are told their limits: SHRINKALLOC_HARD_LIMIT {} ({}%), \
                     SHRINKALLOC_SOFT_LIMIT {} ({}%)",
                    report::mib(hard),
                    allocator::HARD_SHARE_PERCENT,
                    report::mib(soft),
                    allocator::SOFT_SHARE_PERCENT
                );
            }
        }
    }
    println!(
        "{} s per allocator, {} threads, seed {} (--seed {} repeats it); allocators: {}\n",
        plan.duration.as_secs_f64(),
        plan.threads,
        plan.seed,
        plan.seed,
        names.join(", ")
    );
}

fn write_outputs(out: &Path, plan: &Plan, results: &[RunResult], usage: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    report::write_results_csv(&out.join("results.csv"), plan, results)?;
    report::write_usage_csv(&out.join("usage.csv"), plan, results)?;
    std::fs::write(out.join("chart.svg"), chart::svg(plan, results, usage))?;
    println!("chart:   {}", out.join("chart.svg").display());
    println!("usage:   {}", out.join("usage.csv").display());
    println!("results: {}", out.join("results.csv").display());
    Ok(())
}

fn exit_code(results: &[RunResult]) -> i32 {
    if interrupt::interrupted() || results.iter().any(|r| r.outcome == Outcome::Interrupted) {
        130
    } else if results.iter().any(RunResult::failed) {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_milliseconds_and_minutes() {
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("5h"), None);
    }

    #[test]
    fn options_parse_and_reject_nonsense() {
        let args: Vec<String> =
            ["--allocators", "shrinkalloc,glibc", "--limit", "128M", "--seed", "7", "--require-cgroup"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let o = parse_options(&args).unwrap();
        assert_eq!(o.allocators, Some(vec![Allocator::ShrinkAlloc, Allocator::Glibc]));
        assert_eq!((o.limit, o.seed, o.require_cgroup), (128 << 20, Some(7), true));
        assert!(parse_options(&["--allocators".into(), "tcmalloc".into()]).is_err());
        assert!(parse_options(&["--limit".into(), "1M".into()]).is_err());
        assert!(parse_options(&["--bogus".into(), "1".into()]).is_err());
    }
}
