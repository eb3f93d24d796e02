#!/usr/bin/env python3
"""Side-by-side harness: real programs under shrinkalloc, glibc, jemalloc,
mimalloc and tcmalloc, each allocator put in by LD_PRELOAD.

For every repetition, every workload runs once under each allocator, one
right after the other (the order rotates from one repetition to the next),
so the candidates of a workload share the machine's noise. Each run is a
child process; its wall time, CPU time (user + system), peak RSS and page
faults come from wait4(). The tables show each allocator's median over the
repetitions, its ratio to mimalloc and shrinkalloc's ratio to the best of
the four peers, and a geometric mean over the workloads; then shrinkalloc
against each other allocator paired by repetition (each repetition gives
one geometric mean over the workloads of the two run back to back), with a
95% interval, so that a figure near a target comes with how far it moves
from one repetition to the next.

Usage (from the repository root, after `cargo build --release -p shrinkalloc-ffi`):

    python3 benches/programs/run.py                     # everything, 3 repetitions
    python3 benches/programs/run.py --threads 16 --reps 5
    python3 benches/programs/run.py --only redis,mix --allocators shrinkalloc,mimalloc
    python3 benches/programs/run.py --json out.json     # keep the raw runs
    python3 benches/programs/run.py --report out.json   # reprint tables from them

On a machine without the packages (the 16-core device, say), carry the built
programs, the peers' libraries and GNU time, and name them:

    python3 benches/programs/run.py --no-build --build-dir DIR/programs \
        --peer-dir DIR --time DIR/time --no-callgrind --only server,mix,...

Needs: cc, g++, valgrind, redis-server and redis-benchmark, python3.11 and
its test suite (Debian: libpython3.11-testsuite), the peers' libraries
(libjemalloc2, libmimalloc2.0, libtcmalloc-minimal4), and for the
`espresso` row pip and PyPI: Berkeley espresso's C source is taken from the
`pyeda` source distribution (see `build_espresso`) and built once into the
build directory.
"""

import argparse
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")

# glibc is "preloaded" too: redis-server from Debian links libjemalloc, so
# without it glibc's row would measure jemalloc. Preloading libc.so.6 puts
# its malloc ahead of the linked jemalloc; for every other program it
# changes nothing.
ALLOCATORS = {
    "shrinkalloc": REPO / "target/release/libshrinkalloc.so",
    "glibc": Path("/lib/x86_64-linux-gnu/libc.so.6"),
    "jemalloc": LIBDIR / "libjemalloc.so.2",
    "mimalloc": LIBDIR / "libmimalloc.so.2",
    "tcmalloc": LIBDIR / "libtcmalloc_minimal.so.4",
}
PEER = "mimalloc"
SUBJECT = "shrinkalloc"
# The allocators "best peer" is chosen among; others given with --extra
# (an older build of shrinkalloc, say) get columns but are never the peer.
PEERS = ("glibc", "jemalloc", "mimalloc", "tcmalloc")

# name -> (source, what it models); each built binary takes THREADS SCALE.
C_PROGRAMS = {
    "server": ("server.cc", "server model: C++ objects, sized delete, cross-thread frees"),
    "prodcons": ("prodcons.c", "producer/consumer pairs, 16 B-4 KiB, batches of 64"),
    "mix": ("mix.c", "realistic size/lifetime mix"),
    "perthread": ("perthread.c", "per-thread malloc/free loop, 16 B-1 KiB"),
    "large": ("large.c", "large blocks 5-25 MiB"),
    "realloc": ("realloc.c", "random sizes, realloc up to 8 MiB, cross-thread"),
    "churn": ("churn.c", "thread churn: 400 rounds of short-lived threads"),
}
# The single-threaded logic minimiser (mimalloc-bench's `espresso`):
# Berkeley espresso, whose C source the `pyeda` package carries in its
# source distribution (thirdparty/espresso); its input comes from
# `espresso_pla.py`.
ESPRESSO_SDIST = "pyeda==0.29.0"
PY = "/usr/bin/python3.11"
TIME = "/usr/bin/time"
PY_TESTS = ["test_dict", "test_re", "test_heapq", "test_collections",
            "test_textwrap", "test_string", "test_bisect"]
REDIS_TESTS = ["SET", "GET", "LPUSH", "LRANGE_100"]
REDIS_PIPELINED = ["SET", "GET"]


def build(build_dir, names):
    """Compiles the C and C++ workloads and the callgrind loop, and
    espresso when its row is asked for."""
    build_dir.mkdir(parents=True, exist_ok=True)
    if "espresso" in names:
        build_espresso(build_dir)
    for name, (src, _) in C_PROGRAMS.items():
        cc = ["g++", "-std=c++17"] if src.endswith(".cc") else ["cc", "-std=gnu11"]
        run_checked(cc + ["-O2", "-g", "-pthread", "-Wall", "-Wextra", "-o",
                          str(build_dir / name), str(HERE / src)])
    run_checked(["cc", "-O2", "-fno-builtin", "-o", str(build_dir / "cgloop"),
                 str(HERE / "cgloop.c")])


def build_espresso(build_dir):
    """Berkeley espresso from `pyeda`'s source distribution (downloaded
    with pip from PyPI, not kept in this repository), and its input. Once:
    a build directory that has both keeps them."""
    binary, pla = build_dir / "espresso", build_dir / "espresso.pla"
    if not pla.exists():
        res = subprocess.run([sys.executable, str(HERE / "espresso_pla.py")],
                             capture_output=True, text=True, check=True)
        pla.write_text(res.stdout)
    if binary.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_checked([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                     "-d", tmp, ESPRESSO_SDIST])
        (sdist,) = Path(tmp).glob("pyeda-*.tar.gz")
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = Path(tmp).glob("pyeda-*/thirdparty/espresso/src")
        # K&R-era C: its warnings are not ours to fix.
        run_checked(["cc", "-O2", "-w", "-o", str(binary)] + sorted(str(c) for c in src.glob("*.c")))


def run_checked(cmd):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr}")


# Environment variables set for an allocator given as --extra NAME=PATH,VAR=VALUE.
ALLOC_ENV = {}


def env_for(alloc, extra=None):
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(ALLOCATORS[alloc])
    env.update(ALLOC_ENV.get(alloc, {}))
    env.update(extra or {})
    return env


def timed(cmd, report):
    """`cmd` run under GNU time, which writes the child's rusage to `report`.
    Not wait4() here: a child forked from this Python process would count
    the runner's own pages in its peak RSS (Linux keeps the high-water mark
    of the image it had before exec); GNU time is small."""
    return [TIME, "-o", report, "-f", "%U %S %M %R %F"] + cmd


def read_time(report):
    utime, stime, rss, minflt, majflt = Path(report).read_text().split()[-5:]
    return {"cpu": float(utime) + float(stime), "rss": int(rss),
            "faults": int(minflt) + int(majflt)}


def measure(cmd, env, cwd=None, expect=None, timeout=600):
    """Runs one child; returns its wall and CPU seconds, peak RSS (KiB) and
    page faults, or raises if it failed or printed something unexpected."""
    with tempfile.NamedTemporaryFile() as report:
        start = time.perf_counter()
        res = subprocess.run(timed(cmd, report.name), env=env, cwd=cwd, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=timeout)
        wall = time.perf_counter() - start
        text = res.stdout.decode(errors="replace")
        if res.returncode != 0 or (expect and not re.search(expect, text)):
            raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {text[-400:]}")
        return dict(wall=wall, **read_time(report.name))


def c_workload(name, build_dir, args):
    def run(alloc):
        return {name: measure([str(build_dir / name), str(args.threads), str(args.scale)],
                              env_for(alloc), expect=r"^ok ")}
    return run


def espresso(build_dir):
    def run(alloc):
        return {"espresso": measure([str(build_dir / "espresso"), str(build_dir / "espresso.pla")],
                                    env_for(alloc), expect=r"(?m)^\.e$")}
    return run


def py_churn(args, pymalloc):
    def run(alloc):
        extra = {} if pymalloc else {"PYTHONMALLOC": "malloc"}
        name = "python churn" + ("" if pymalloc else " (PYTHONMALLOC=malloc)")
        return {name: measure([PY, str(HERE / "churn.py"), str(args.scale)],
                              env_for(alloc, extra), expect=r"^ok ")}
    return run


def py_tests(alloc):
    with tempfile.TemporaryDirectory() as cwd:
        return {"python test slice": measure(
            [PY, "-m", "test", "-q", "--randseed", "1"] + PY_TESTS,
            env_for(alloc), cwd=cwd, expect=r"result: SUCCESS")}


def wait_port(port, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("redis-server exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def pinned(cpu, cmd):
    """`cmd` on CPU `cpu` alone when the machine has two or more: the
    server on one, redis-benchmark on another, so that they do not take
    turns on the same core (on 2 cores, unpinned, requests per second moved
    by 10-30% between two runs of one library)."""
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu)] + cmd


def redis_bench(port, requests, tests, pipeline):
    cmd = pinned(1, ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests),
           "-c", "50", "-d", "1024", "-r", "100000", "-P", str(pipeline),
           "-t", ",".join(tests), "--csv"])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    rows = {}
    for line in res.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        # LRANGE_100's line reads "LRANGE_100 (first 100 elements)".
        key = cells[0].split(" ")[0]
        if len(cells) > 1 and key in tests:
            rows[key] = float(cells[1])
    if set(rows) != set(tests):
        raise RuntimeError(f"redis-benchmark: {res.stdout[-400:]} {res.stderr[-400:]}")
    return rows


def redis(args):
    def run(alloc):
        port = str(args.redis_port)
        with tempfile.TemporaryDirectory() as cwd:
            report = os.path.join(cwd, "rusage")
            server = subprocess.Popen(
                timed(pinned(0, ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--jemalloc-bg-thread", "no", "--dir", cwd,
                                 "--logfile", os.path.join(cwd, "log")]), report),
                env=env_for(alloc), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start = time.perf_counter()
            try:
                wait_port(args.redis_port, server)
                plain = redis_bench(args.redis_port, args.redis_requests, REDIS_TESTS, 1)
                piped = redis_bench(args.redis_port, args.redis_requests * 5, REDIS_PIPELINED, 16)
                subprocess.run(["redis-cli", "-p", port, "shutdown", "nosave"],
                               capture_output=True, timeout=30)
                server.wait(timeout=30)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
            span = time.perf_counter() - start
            server_row = dict(span=span, **read_time(report))
        rows = {f"redis {t}": {"rps": rps, "wall": 1e6 / rps} for t, rps in plain.items()}
        rows.update({f"redis {t} -P 16": {"rps": rps, "wall": 1e6 / rps}
                     for t, rps in piped.items()})
        rows["redis-server"] = server_row
        return rows
    return run


def workloads(args, build_dir):
    w = {name: c_workload(name, build_dir, args) for name in C_PROGRAMS}
    w["espresso"] = espresso(build_dir)
    w["redis"] = redis(args)
    w["pychurn"] = py_churn(args, pymalloc=True)
    w["pychurn-malloc"] = py_churn(args, pymalloc=False)
    w["pytests"] = py_tests
    return w


def callgrind(build_dir, allocs, sizes=(32, 1024, 8192), n=100000):
    """Instructions per malloc+free pair through LD_PRELOAD."""
    table = {}
    for alloc in allocs:
        for size in sizes:
            counts = []
            for reps in (n, 2 * n):
                res = subprocess.run(
                    ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                     str(build_dir / "cgloop"), str(size), str(reps)],
                    env=env_for(alloc), capture_output=True, text=True)
                m = re.search(r"Collected : (\d+)", res.stderr)
                if not m:
                    raise RuntimeError(f"callgrind {alloc} {size}: {res.stderr[-400:]}")
                counts.append(int(m.group(1)))
            table.setdefault(alloc, {})[size] = (counts[1] - counts[0]) / n
    return table


# ---- reporting -------------------------------------------------------------

def medians(runs, metric):
    """{row: {alloc: median}} for one metric over the repetitions."""
    out = {}
    for row, by_alloc in runs.items():
        for alloc, samples in by_alloc.items():
            vals = [s[metric] for s in samples if metric in s]
            if vals:
                out.setdefault(row, {})[alloc] = statistics.median(vals)
    return out


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def paired_rounds(runs, metric, a, b):
    """`a` against `b` round by round: in each repetition the two ran one
    right after the other on every workload, so each repetition gives one
    geometric mean of `a`'s figure over `b`'s across the workloads. Returns
    the geometric mean of those, a 95% interval (normal approximation on
    the logs) and the number of repetitions, or None with fewer than two.
    The interval shows how far the tables' figure moves with the machine's
    noise from one repetition to the next."""
    per_round = {}
    for by_alloc in runs.values():
        xs, ys = by_alloc.get(a, []), by_alloc.get(b, [])
        for r, (x, y) in enumerate(zip(xs, ys)):
            if x.get(metric, 0) > 0 and y.get(metric, 0) > 0:
                per_round.setdefault(r, []).append(math.log(x[metric] / y[metric]))
    logs = [statistics.fmean(v) for v in per_round.values()]
    if len(logs) < 2:
        return None
    mean, half = statistics.fmean(logs), 1.96 * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs)


def fmt(v, metric):
    if metric == "rss":
        return f"{v / 1024:.1f}"
    if metric in ("faults", "rps"):
        return f"{v / 1000:.1f}k"
    return f"{v:#.3g}"


def table(med, allocs, metric, unit, lower_is_better=True):
    peers = [a for a in allocs if a in PEERS]
    lines = [f"| workload | " + " | ".join(allocs) + " | " +
             " | ".join(f"{a}/{PEER}" for a in allocs if a != PEER) +
             f" | {SUBJECT}/best peer | best peer |",
             "|---|" + "--:|" * (2 * len(allocs)) + "---|"]
    ratios = {a: [] for a in allocs}
    best_ratio, vs_best = [], []
    for row in sorted(med):
        m = med[row]
        if PEER not in m:
            continue
        cells = [fmt(m[a], metric) if a in m else "-" for a in allocs]
        rs = []
        for a in allocs:
            if a == PEER:
                continue
            r = m[a] / m[PEER] if a in m else None
            if r is not None:
                ratios[a].append(r)
            rs.append(f"{r:.2f}" if r is not None else "-")
        pm = {a: m[a] for a in peers if a in m}
        pick = min if lower_is_better else max
        best = pick(pm, key=pm.get)
        best_ratio.append(pm[best] / m[PEER])
        sb = m[SUBJECT] / pm[best] if SUBJECT in m else None
        if sb is not None:
            # Sorted worst first: the largest cost, or the smallest throughput.
            vs_best.append((sb if lower_is_better else 1 / sb, sb, row, best))
        tail = f"{sb:.2f}" if sb is not None else "-"
        lines.append(f"| {row} | " + " | ".join(cells) + " | " + " | ".join(rs) +
                     f" | {tail} | {best} |")
    gm = {a: geomean(ratios[a]) for a in allocs if a != PEER}
    better = "below" if lower_is_better else "above"
    lines.append(f"| **geometric mean** ({unit}: {better} 1 is better than {PEER}) | " +
                 " | ".join("" for _ in allocs) + " | " +
                 " | ".join(f"**{gm[a]:.2f}**" for a in allocs if a != PEER) +
                 f" | | best peer on each: {geomean(best_ratio):.2f} |")
    return lines, gm, geomean(best_ratio), sorted(vs_best, reverse=True)


def report(data):
    runs, allocs = data["runs"], data["allocators"]
    out = [f"threads {data['threads']}, scale {data['scale']}, {data['reps']} repetitions, "
           f"{data['date']}, load average at start {data['load']}", ""]
    summary = {}
    for metric, title, unit, better_low in (
            ("wall", "Wall time, s (redis rows: µs per request = 10^6 / requests per second)",
             "wall", True),
            ("cpu", "CPU time (user + system), s", "cpu", True),
            ("rss", "Peak RSS, MiB", "rss", True),
            ("faults", "Page faults (minor + major)", "faults", True),
            ("rps", "redis requests per second (higher is better)", "rps", False)):
        med = medians(runs, metric)
        if not med:
            continue
        lines, gm, best, vs_best = table(med, allocs, metric, unit, better_low)
        out += [f"#### {title}", ""] + lines + [""]
        summary[metric] = (gm, best, vs_best)
    out += ["#### Summary (ratios to mimalloc, geometric mean over the workloads)", "",
            "| metric | " + " | ".join(a for a in allocs if a != PEER) +
            " | best peer on each |", "|---|" + "--:|" * len(allocs)]
    for metric in ("wall", "cpu", "rss"):
        if metric in summary:
            gm, best, _ = summary[metric]
            out.append(f"| {metric} | " + " | ".join(f"{gm[a]:.2f}" for a in allocs
                                                      if a != PEER) + f" | {best:.2f} |")
    out.append("")
    for other in [a for a in allocs if a != SUBJECT]:
        cells = []
        for metric in ("wall", "cpu", "rss"):
            res = paired_rounds(runs, metric, SUBJECT, other)
            if res:
                g, lo, hi, n = res
                cells.append(f"{metric} {g:.3f} ({lo:.3f}-{hi:.3f})")
        if cells:
            out.append(f"- {SUBJECT}/{other} paired by repetition, 95% interval over "
                       f"{n} repetitions: " + ", ".join(cells))
    out.append("")
    for metric in ("wall", "cpu", "rss", "rps"):
        if metric in summary and summary[metric][2]:
            worst = summary[metric][2][:3]
            out.append(f"- worst {metric} against the best peer: " + ", ".join(
                f"{row} {r:.2f}x {best}" for _, r, row, best in worst))
    cg = data.get("callgrind")
    if cg:
        sizes = sorted({int(s) for a in cg for s in cg[a]})
        out += ["", "#### Instructions per malloc+free through LD_PRELOAD (callgrind)", "",
                "| allocator | " + " | ".join(f"{s} B" for s in sizes) + " |",
                "|---|" + "--:|" * len(sizes)]
        for a, by_size in cg.items():
            out.append(f"| {a} | " + " | ".join(
                f"{by_size[str(s)] if str(s) in by_size else by_size[s]:.0f}"
                for s in sizes) + " |")
    return "\n".join(out)


def main():
    global TIME
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", help="comma-separated workloads (default: all)")
    ap.add_argument("--allocators", default=",".join(ALLOCATORS))
    ap.add_argument("--lib", help="shrinkalloc's library (default target/release/libshrinkalloc.so)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=PATH[,VAR=VALUE...]",
                    help="one more library to measure, e.g. an older shrinkalloc, with "
                         "environment variables of its own (SHRINKALLOC_PURGE_DELAY_MS=10)")
    ap.add_argument("--redis-port", type=int, default=26479)
    ap.add_argument("--redis-requests", type=int, default=20000)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--build-dir", default=str(REPO / "target/programs"))
    ap.add_argument("--no-build", action="store_true",
                    help="run the programs already in --build-dir (no compiler needed)")
    ap.add_argument("--peer-dir", help="take the peers' libraries from here, not Debian's")
    ap.add_argument("--time", default=TIME, help="GNU time's binary")
    ap.add_argument("--json", help="write the raw runs here")
    ap.add_argument("--report", help="only print the tables of a --json file")
    args = ap.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    if args.lib:
        ALLOCATORS[SUBJECT] = Path(args.lib).resolve()
    if args.peer_dir:
        for a in ("jemalloc", "mimalloc", "tcmalloc"):
            ALLOCATORS[a] = Path(args.peer_dir).resolve() / ALLOCATORS[a].name
    TIME = str(Path(args.time).resolve()) if os.sep in args.time else args.time
    allocs = args.allocators.split(",")
    for extra in args.extra:
        name, spec = extra.split("=", 1)
        path, *assignments = spec.split(",")
        ALLOCATORS[name] = Path(path).resolve()
        ALLOC_ENV[name] = dict(a.split("=", 1) for a in assignments)
        allocs.append(name)
    for a in allocs:
        if not ALLOCATORS[a].exists():
            sys.exit(f"{a}: {ALLOCATORS[a]} not found")
    build_dir = Path(args.build_dir)
    all_w = workloads(args, build_dir)
    names = args.only.split(",") if args.only else list(all_w)
    needs = [TIME]
    needs += [] if args.no_build else ["cc", "g++"]
    needs += [] if args.no_callgrind else ["valgrind"]
    needs += ["redis-server", "redis-benchmark", "redis-cli"] if "redis" in names else []
    needs += [PY] if any(n.startswith("py") for n in names) else []
    for tool in needs:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    if not args.no_build:
        build(build_dir, names)
    data = {"threads": args.threads, "scale": args.scale, "reps": args.reps,
            "allocators": allocs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load": round(os.getloadavg()[0], 1),
            "libs": {a: str(ALLOCATORS[a]) for a in allocs}, "runs": {}}
    for rep in range(args.reps):
        for name in names:
            order = allocs[rep % len(allocs):] + allocs[:rep % len(allocs)]
            for alloc in order:
                rows = all_w[name](alloc)
                for row, sample in rows.items():
                    data["runs"].setdefault(row, {}).setdefault(alloc, []).append(sample)
                print(f"rep {rep + 1} {name:<15} {alloc:<12} " + "  ".join(
                    f"{row}: " + " ".join(f"{k}={v:.4g}" for k, v in s.items())
                    for row, s in rows.items() if len(rows) == 1 or row == "redis-server"),
                    file=sys.stderr, flush=True)
    if not args.no_callgrind:
        data["callgrind"] = callgrind(build_dir, allocs)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    print(report(data))


if __name__ == "__main__":
    main()
