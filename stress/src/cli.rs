//! The command line, declared with `clap`'s derive: `demo`, `run
//! <scenario>`, `list` and `replay`, each with its own `--help`; a misspelt
//! subcommand, option, scenario or allocator gets clap's suggestion.
//!
//! Invariant: every value is checked here, by the parser of its option, so
//! that bad usage ends in clap's error and exit status 2
//! ([`crate::scenario::EXIT_USAGE`]) before anything runs. Sizes go through
//! `parse-size` (binary units: `256M` is 256 MiB), durations through
//! `humantime`, plus bare numbers as seconds. The hidden `child` command is
//! not clap's: a child is this binary re-executed by the harness, and parses
//! its own arguments (`scenario::child_main`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::allocator::Allocator;
use crate::scenario;

/// Runs workloads in child processes inside memory cgroups, under
/// shrinkalloc and under other allocators side by side, and reports who
/// survived, how close to the limit each came, and how fast.
#[derive(Parser, Debug)]
#[command(
    name = "shrinkalloc-stress",
    version,
    after_help = "Without a command: `demo`.\n\nExit status: 0 when every run ended as its scenario expects, 1 \
                  otherwise (or a cgroup was left behind), 2 on bad usage or a missing cgroup with \
                  --require-cgroup, 130 when interrupted."
)]
pub struct Cli {
    /// What to do (default: `demo`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The `cache` scenario under a 256 MiB memory cgroup, shrinkalloc against the other
    /// allocators installed, 20 s; ends with a table and a chart.
    Demo(Options),
    /// One scenario under the given allocators, one child after another.
    Run {
        /// The scenario (see `list`).
        #[arg(value_parser = scenario_names())]
        scenario: String,
        /// The options of the run.
        #[command(flatten)]
        options: Options,
    },
    /// The scenarios and allocators.
    List,
    /// A trace a traced run left (trace-<allocator>.bin) through the oracle again, at the
    /// given limit: hits against the ideal LRU's, and the LRU's hits at other budgets.
    Replay {
        /// The trace file.
        trace: PathBuf,
        /// The limit the run had, e.g. 256M.
        #[arg(long, value_name = "SIZE", value_parser = parse_replay_limit)]
        limit: usize,
    },
}

/// Options of `demo` and `run`.
#[derive(Args, Debug)]
pub struct Options {
    /// The allocators, in order (default: the scenario's own list).
    #[arg(long, value_name = "A,B,..", value_delimiter = ',', value_enum)]
    pub allocators: Option<Vec<Allocator>>,
    /// Memory limit per child, e.g. 256M, 1G (at least 16M).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_limit)]
    pub limit: usize,
    /// What the cache scenarios would hold unconstrained, e.g. 1G (default: cache 4x the limit,
    /// cache-c 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_demand)]
    pub demand: Option<usize>,
    /// How long each child runs: 20s, 1500ms, 2m, or plain seconds (default: per scenario).
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// A soft line on each run's group, under the limit: memory.high on cgroup v2,
    /// memory.soft_limit_in_bytes on v1 (shrinkalloc derives its soft limit from it).
    #[arg(long, value_name = "SIZE", value_parser = parse_demand)]
    pub high: Option<usize>,
    /// Seed of every random choice (default: from the clock, printed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Worker threads per child.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: u16,
    /// Where results.csv, results.json, usage.csv, chart.svg and chart.png (and the traces) go
    /// (default: <cargo target dir>/shrinkalloc-stress/<scenario>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Fail (exit 2) instead of falling back when no memory cgroup can be made.
    #[arg(long)]
    pub require_cgroup: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allocators: None,
            limit: 256 << 20,
            demand: None,
            high: None,
            duration: None,
            seed: None,
            threads: 4,
            out: None,
            require_cgroup: false,
        }
    }
}

fn scenario_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(scenario::ALL.iter().map(|s| s.name))
}

/// A size with binary units: `4096`, `64K`, `256M`, `256MiB`, `1G`, `1.5G`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let n = parse_size::Config::new().with_binary().parse_size(s).map_err(|e| format!("{e} (e.g. 256M)"))?;
    usize::try_from(n).map_err(|_| "too large".to_string())
}

fn at_least(s: &str, min: usize, what: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    (n >= min).then_some(n).ok_or_else(|| format!("{what} is needed"))
}

fn parse_limit(s: &str) -> Result<usize, String> {
    at_least(s, 16 << 20, "a limit of at least 16M, e.g. 256M,")
}

fn parse_demand(s: &str) -> Result<usize, String> {
    at_least(s, 1 << 20, "a demand of at least 1M, e.g. 1G,")
}

fn parse_replay_limit(s: &str) -> Result<usize, String> {
    at_least(s, 1, "a limit of more than zero")
}

/// A duration: `20s`, `1500ms`, `2m`, `1min 30s` (humantime's forms), or a
/// plain number of seconds (`3`, `2.5`); more than zero and less than a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => return Err("not a duration".into()),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 20s, 1500ms, 2m)"))?,
    };
    if d.is_zero() || d >= Duration::from_secs(86_400) {
        return Err("more than zero and less than a day, please".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shrinkalloc-stress").chain(args.iter().copied()))
    }

    #[test]
    fn durations_parse_in_seconds_milliseconds_and_minutes() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_limit("1M").is_err());
        assert_eq!(parse_limit("16M"), Ok(16 << 20));
    }

    #[test]
    fn options_parse_and_reject_nonsense() {
        let cli =
            parse(&["run", "cache", "--allocators", "shrinkalloc,glibc", "--limit", "128M", "--seed", "7"]).unwrap();
        let Some(Command::Run { scenario, options: o }) = cli.command else { panic!("not run") };
        assert_eq!(scenario, "cache");
        assert_eq!(o.allocators, Some(vec![Allocator::ShrinkAlloc, Allocator::Glibc]));
        assert_eq!((o.limit, o.seed, o.require_cgroup, o.threads), (128 << 20, Some(7), false, 4));
        assert!(parse(&["run", "cache", "--allocators", "ptmalloc"]).is_err());
        assert!(parse(&["run", "cache", "--limit", "1M"]).is_err());
        assert!(parse(&["run", "cache", "--threads", "0"]).is_err());
        assert!(parse(&["demo", "--bogus", "1"]).is_err());
        assert!(parse(&["run", "cahce"]).is_err());
        assert!(parse(&[]).unwrap().command.is_none());
    }

    #[test]
    fn a_misspelt_scenario_or_flag_gets_a_suggestion() {
        let e = parse(&["run", "cahce"]).unwrap_err().to_string();
        assert!(e.contains("cache"), "{e}");
        let e = parse(&["demo", "--limt", "1G"]).unwrap_err().to_string();
        assert!(e.contains("--limit"), "{e}");
        assert_eq!(parse(&["demo", "--limt", "1G"]).unwrap_err().exit_code(), scenario::EXIT_USAGE);
    }
}
