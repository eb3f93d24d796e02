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
mod cli;
mod files;
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

use allocator::Allocator;
use clap::Parser as _;
use cli::{Cli, Command, Options};
use runner::{Limiter, Outcome, Plan, RunResult};

#[global_allocator]
static GLOBAL: alloc_switch::Switch = alloc_switch::Switch;

fn main() -> ExitCode {
    let code = match std::env::args().nth(1).as_deref() {
        // A child is this binary re-executed by the harness: not clap's (see cli.rs).
        Some("child") => {
            let args: Vec<String> = std::env::args().skip(3).collect();
            match std::env::args().nth(2) {
                Some(name) => scenario::child_main(&name, &args),
                None => {
                    eprintln!("shrinkalloc-stress: child needs a scenario");
                    scenario::EXIT_USAGE
                }
            }
        }
        _ => dispatch(Cli::parse()),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        None => demo(Options::default()),
        Some(Command::Demo(o)) => demo(o),
        Some(Command::Run { scenario, options }) => {
            // clap checked the name against the same list.
            scenario::find(&scenario).map_or(scenario::EXIT_USAGE, |s| run(s, options))
        }
        Some(Command::List) => {
            list();
            0
        }
        Some(Command::Replay { trace, limit }) => replay(&trace, limit),
    }
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
        for a in allocator::PRELOADED {
            match a.available() {
                Ok(()) => list.push(a),
                Err(why) => eprintln!("!!! shrinkalloc-stress: leaving {} OUT of the demo: {why}", a.name()),
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
            "\nWhat happened: the cache outgrows the limit under every allocator. glibc, jemalloc, mimalloc and \
             tcmalloc give the\nprocess memory until the kernel's OOM killer ends it; shrinkalloc without shrinkers has \
             nothing to give\nback and dies at the limit too; shrinkalloc with the cache's shrinker evicts old entries as the limit \
             nears and keeps\nserving, under the limit, to the end."
        );
    }
    code
}

fn run(s: &'static scenario::Scenario, o: Options) -> i32 {
    if o.high.is_some_and(|h| h >= o.limit) {
        eprintln!("shrinkalloc-stress: --high must be under --limit");
        return scenario::EXIT_USAGE;
    }
    interrupt::install();
    let limiter = Limiter::probe();
    if let Limiter::Fallback(reason) = &limiter {
        eprintln!("{}", Limiter::fallback_banner(reason));
        if o.require_cgroup || o.high.is_some() {
            eprintln!("shrinkalloc-stress: --require-cgroup or --high: giving up");
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
        threads: usize::from(o.threads),
        allocators: o.allocators.unwrap_or_else(|| s.default_allocators.to_vec()),
        demand: o.demand,
        high: o.high,
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
    if let Some(h) = plan.high {
        println!("soft line {} on each group (memory.high on v2, memory.soft_limit_in_bytes on v1)", report::mib(h));
    }
    if let Some(d) = plan.demand {
        println!("demand {} (the limit is {:.0}% of it)", report::mib(d), plan.limit as f64 * 100.0 / d as f64);
    }
    if plan.scenario.traced {
        println!(
            "each child's cache requests are traced and replayed through an exact LRU of {}% of the limit \
             (hits/ideal); band: usage after warm-up (from a quarter of the duration, later while the cache still fills, at most half)",
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
    files::write_results_csv(&out.join("results.csv"), plan, results)?;
    files::write_results_json(&out.join("results.json"), plan, results)?;
    files::write_usage_csv(&out.join("usage.csv"), plan, results)?;
    let svg = chart::svg(plan, results, usage).map_err(std::io::Error::other)?;
    std::fs::write(out.join("chart.svg"), svg)?;
    std::fs::write(out.join("chart.png"), chart::png(plan, results, usage).map_err(std::io::Error::other)?)?;
    println!("chart:   {} (and chart.png)", out.join("chart.svg").display());
    println!("usage:   {}", out.join("usage.csv").display());
    println!("results: {} (and results.json)", out.join("results.csv").display());
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
