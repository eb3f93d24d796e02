//! `preload`: an unmodified C daemon, Debian's `redis-server`, under each
//! allocator by `LD_PRELOAD` (it links jemalloc dynamically, so a preloaded
//! malloc replaces it; glibc's is had by preloading glibc itself), in a
//! memory cgroup, with a dataset that grows and no `maxmemory`. The driver
//! talks to it over one loopback TCP connection (127.0.0.1, a free port; redis
//! serves commands in one thread, so `--threads` is not used) in pipelined
//! batches of [`BATCH`] commands:
//!
//! 1. fill: SET keys (values of 256 B..4 KiB, each stamped with a pattern of
//!    its key) until redis's resident set reaches half the limit; GET
//!    [`CHECKED`] random keys back and check every byte;
//! 2. FLUSHALL, then wait [`SETTLE`]: how much memory does the allocator
//!    give back (`rss_flushed` against `rss_filled`)?
//! 3. grow: SET new keys until redis fails, or the run's time is up: how
//!    close to the limit does it get (the cgroup's peak), and how much data
//!    does it hold when it fails (`data_bytes` of its last status line)?
//!
//! Redis cannot fail cleanly here: without `maxmemory` it never refuses a
//! write, and when malloc returns NULL it logs "Out Of Memory allocating N
//! bytes!" and aborts. So every allocator is expected to die at the limit:
//! glibc, jemalloc and mimalloc at the cgroup's limit, by the kernel's OOM
//! killer; shrinkalloc a little below it, where its hard limit (derived
//! from the cgroup's) refuses an allocation, by redis's own abort. Redis
//! runs with `crash-log-enabled no`: its crash report allocates, and under a
//! hard limit it re-enters the OOM handler until the stack overflows (a
//! SIGSEGV that says nothing about the heap). A run that dies of a signal
//! with no out-of-memory report before it (SIGSEGV, SIGABRT) crashed: under
//! shrinkalloc, a bug.
//!
//! Status fields: `phase` (1 fill, 2 settle, 3 grow), `keys` and
//! `data_bytes` (the keys and value bytes redis holds), `daemon_rss`,
//! `rss_filled`, `data_filled`, `rss_flushed`, `returned_pct` (of
//! `rss_filled`), `rss_peak`, `verified` (values checked),
//! `error_replies`, `oom_bytes` (the allocation redis reported failing; 0:
//! none).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{self, Daemon, Figures};
use super::{corrupt, ChildConfig, Column, Driver, Env, Expect, Launch, Run, Scenario, Unit, WORKDIR_ENV};
use crate::allocator::SHRINKALLOC_AND_PEERS;
use crate::status;
use crate::verify::{self, mix, Rng};

/// The `preload` scenario.
pub static SCENARIO: Scenario = Scenario {
    name: "preload",
    about: "an unmodified redis-server under LD_PRELOAD, dataset growing without maxmemory: how close to the \
            limit it gets, and what a FLUSHALL gives back",
    launch: Launch::Driver(&DRIVER),
    default_allocators: &SHRINKALLOC_AND_PEERS,
    default_duration: Duration::from_secs(20),
    expect: |_| Expect::DiesAtLimit,
    traced: false,
};

static DRIVER: Driver = Driver {
    prepare,
    main,
    cleanup: |_| Ok(()),
    columns: &[
        Column { field: "data_bytes", header: "data held at the end", unit: Unit::Bytes },
        Column { field: "rss_filled", header: "RSS filled", unit: Unit::Bytes },
        Column { field: "rss_flushed", header: "RSS after FLUSHALL", unit: Unit::Bytes },
        Column { field: "returned_pct", header: "given back", unit: Unit::Percent },
    ],
};

/// Commands per pipelined batch.
const BATCH: usize = 64;
/// Values checked by GET after the fill.
const CHECKED: u64 = 1000;
/// How long after FLUSHALL the resident set is read.
const SETTLE: Duration = Duration::from_secs(3);
const MIN_VALUE: usize = 256;
const MAX_VALUE: usize = 4096;

const FIELDS: [&str; 12] = [
    "phase",
    "keys",
    "data_bytes",
    "daemon_rss",
    "rss_filled",
    "data_filled",
    "rss_flushed",
    "returned_pct",
    "rss_peak",
    "verified",
    "error_replies",
    "oom_bytes",
];

fn prepare() -> Result<Env, String> {
    daemon::require("redis-server", "redis-server")?;
    let lib = daemon::library()?;
    Ok(vec![(daemon::LIB_ENV.to_string(), lib.display().to_string())])
}

fn main(cfg: &ChildConfig) -> i32 {
    let (Ok(lib), Ok(dir)) = (std::env::var(daemon::LIB_ENV), std::env::var(WORKDIR_ENV)) else {
        status::print_error(&format!("the harness gives a driver {} and {WORKDIR_ENV}", daemon::LIB_ENV));
        return super::EXIT_USAGE;
    };
    let run = daemon::driver_run(cfg);
    let figures = Arc::new(Figures::new(FIELDS.to_vec()));
    let preload = daemon::malloc_preload(cfg.allocator, Some(lib.as_ref()));
    let (mut redis, port) = match start_redis(preload.as_deref(), Path::new(&dir), &figures) {
        Ok(r) => r,
        Err(e) => {
            status::print_error(&format!("cannot start redis-server: {e}"));
            return 1;
        }
    };
    let fields = || figures.fields();
    let mut ended = Ok(());
    run.supervise(&fields, || ended = drive(cfg, &run, &figures, redis.id(), port));
    report_end(&run, &figures, &mut redis, ended)
}

/// Starts redis-server on a free loopback port; retries when another
/// process took the port first.
fn start_redis(preload: Option<&str>, dir: &Path, figures: &Arc<Figures>) -> io::Result<(Daemon, u16)> {
    let mut last = io::Error::other("no attempt");
    for _ in 0..3 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "yes"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no", "--maxmemory", "0"])
            .args(["--loglevel", "warning", "--logfile", "", "--crash-log-enabled", "no"])
            .args(["--crash-memcheck-enabled", "no", "--dir"])
            .arg(dir)
            .env_remove("LD_PRELOAD");
        if let Some(lib) = preload {
            cmd.env("LD_PRELOAD", lib);
        }
        let log = Arc::clone(figures);
        let mut redis = Daemon::start(
            &mut cmd,
            move |line| {
                if let Some(n) = out_of_memory(line) {
                    log.set("oom_bytes", n);
                }
                eprintln!("redis-server: {line}");
            },
            |line| eprintln!("redis-server: {line}"),
        )?;
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Some(status) = redis.wait_timeout(Duration::ZERO) {
                last = io::Error::other(format!("redis-server ended at start ({})", daemon::describe(status)));
                break;
            }
            if Redis::connect(port).is_ok() {
                return Ok((redis, port));
            }
            thread::sleep(Duration::from_millis(50));
        }
        redis.kill();
    }
    Err(last)
}

/// The size in redis's "Out Of Memory allocating N bytes!" line.
fn out_of_memory(line: &str) -> Option<u64> {
    let rest = line.split("Out Of Memory allocating ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The three phases; `Err` when the connection to redis broke (it died).
fn drive(cfg: &ChildConfig, run: &Run, f: &Figures, pid: u32, port: u16) -> io::Result<()> {
    let mut redis = Redis::connect(port)?;
    let sample = |f: &Figures| {
        let rss = daemon::resident(pid);
        f.set("daemon_rss", rss);
        f.raise("rss_peak", rss);
        rss
    };
    f.set("phase", 1);
    let mut next_key = 0;
    while sample(f) < cfg.limit as u64 / 2 && !run.done() {
        next_key = redis.set_batch(cfg.seed, next_key, run, f)?;
    }
    f.set("rss_filled", f.get("daemon_rss"));
    f.set("data_filled", f.get("data_bytes"));
    check_values(&mut redis, cfg.seed, next_key, run, f)?;
    f.set("phase", 2);
    redis.send(&[b"FLUSHALL", b"SYNC"])?;
    redis.expect_ok()?;
    f.set("data_bytes", 0);
    f.set("keys", 0);
    let flushed = Instant::now();
    while flushed.elapsed() < SETTLE {
        thread::sleep(Duration::from_millis(100));
        sample(f);
    }
    let (filled, after) = (f.get("rss_filled"), sample(f));
    f.set("rss_flushed", after);
    f.set("returned_pct", (filled.saturating_sub(after) * 100).checked_div(filled).unwrap_or(0));
    f.set("phase", 3);
    while !run.done() && f.get("error_replies") == 0 {
        next_key = redis.set_batch(cfg.seed, next_key, run, f)?;
        sample(f);
    }
    redis.send(&[b"SHUTDOWN", b"NOSAVE"])?;
    Ok(())
}

/// GETs [`CHECKED`] random keys of `0..keys` and checks every byte.
fn check_values(redis: &mut Redis, seed: u64, keys: u64, run: &Run, f: &Figures) -> io::Result<()> {
    let mut rng = Rng::new(seed, 0x9e7);
    for _ in 0..CHECKED.min(keys) {
        let key = rng.below(keys);
        redis.send(&[b"GET", key_name(key).as_bytes()])?;
        let Reply::Bulk(Some(value)) = redis.reply()? else {
            corrupt(format_args!("redis lost key {key} (no value for GET)"));
        };
        if let Err(m) = verify::check_len(&value, mix(seed ^ key), value_len(seed, key)) {
            corrupt(format_args!("redis returned a wrong value for key {key}: {m}"));
        }
        f.add("verified", 1);
        run.count(1);
    }
    Ok(())
}

fn key_name(key: u64) -> String {
    format!("key:{key}")
}

fn value_len(seed: u64, key: u64) -> usize {
    MIN_VALUE + (mix(seed.rotate_left(17) ^ key) % (MAX_VALUE - MIN_VALUE + 1) as u64) as usize
}

/// Reports how redis ended and ends the driver the same way.
fn report_end(run: &Run, f: &Figures, redis: &mut Daemon, ended: io::Result<()>) -> i32 {
    let fields = || f.fields();
    let lost = ended.err();
    let Some(status) = redis.wait_timeout(Duration::from_secs(10)) else {
        run.print(false, &fields);
        status::print_error(&format!("redis-server is still running after {lost:?}"));
        redis.kill();
        return 1;
    };
    if lost.is_none() && status.success() {
        run.print(true, &fields);
        return 0;
    }
    run.print(false, &fields);
    let oom = f.get("oom_bytes");
    let how = daemon::describe(status);
    match status.signal() {
        Some(libc::SIGKILL) => eprintln!("shrinkalloc-stress child: redis-server was killed (SIGKILL)"),
        Some(libc::SIGABRT) if oom > 0 => eprintln!(
            "shrinkalloc-stress child: redis-server aborted: memory allocation of {oom} bytes failed \
             (redis logged \"Out Of Memory allocating {oom} bytes!\")"
        ),
        _ => eprintln!(
            "shrinkalloc-stress child: redis-server CRASHED ({how}) with no out-of-memory report before it \
             (connection: {lost:?})"
        ),
    }
    daemon::end_like(status)
}

/// A reply of redis's protocol (RESP2), as far as the driver needs.
enum Reply {
    Status,
    Error(String),
    Bulk(Option<Vec<u8>>),
    Other,
}

/// A connection to redis with an output buffer for pipelining.
struct Redis {
    out: TcpStream,
    inp: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Redis {
    fn connect(port: u16) -> io::Result<Redis> {
        let out = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        out.set_read_timeout(Some(Duration::from_secs(20)))?;
        let inp = BufReader::new(out.try_clone()?);
        let mut r = Redis { out, inp, buf: Vec::new() };
        r.send(&[b"PING"])?;
        r.expect_ok()?;
        Ok(r)
    }

    /// Queues one command.
    fn queue(&mut self, args: &[&[u8]]) {
        let _ = write!(self.buf, "*{}\r\n", args.len());
        for a in args {
            let _ = write!(self.buf, "${}\r\n", a.len());
            self.buf.extend_from_slice(a);
            self.buf.extend_from_slice(b"\r\n");
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.queue(args);
        self.flush()
    }

    fn reply(&mut self) -> io::Result<Reply> {
        let mut line = Vec::new();
        if self.inp.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"));
        }
        let text = String::from_utf8_lossy(&line[1..]).trim_end().to_string();
        Ok(match line[0] {
            b'+' => Reply::Status,
            b'-' => Reply::Error(text),
            b'$' => match text.parse::<i64>() {
                Ok(n) if n >= 0 => {
                    let mut data = vec![0; n as usize + 2];
                    self.inp.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
                _ => Reply::Bulk(None),
            },
            _ => Reply::Other,
        })
    }

    fn expect_ok(&mut self) -> io::Result<()> {
        match self.reply()? {
            Reply::Status => Ok(()),
            Reply::Error(e) => Err(io::Error::other(format!("redis replied {e}"))),
            _ => Err(io::Error::other("unexpected reply from redis")),
        }
    }

    /// SETs keys `first..first + BATCH` in one pipelined batch; returns the
    /// next key. Error replies are counted (and the keys not held).
    fn set_batch(&mut self, seed: u64, first: u64, run: &Run, f: &Figures) -> io::Result<u64> {
        let mut value = vec![0u8; MAX_VALUE];
        for key in first..first + BATCH as u64 {
            let v = &mut value[..value_len(seed, key)];
            verify::stamp(v, mix(seed ^ key));
            self.queue(&[b"SET", key_name(key).as_bytes(), v]);
        }
        self.flush()?;
        for key in first..first + BATCH as u64 {
            match self.reply()? {
                Reply::Status => {
                    f.add("keys", 1);
                    f.add("data_bytes", value_len(seed, key) as u64);
                    run.count(1);
                }
                Reply::Error(e) => {
                    if f.get("error_replies") == 0 {
                        eprintln!("shrinkalloc-stress child: redis refused a SET: {e}");
                    }
                    f.add("error_replies", 1);
                }
                _ => f.add("error_replies", 1),
            }
        }
        Ok(first + BATCH as u64)
    }
}
