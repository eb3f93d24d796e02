#!/bin/bash
# redis requests per second under each allocator, the server and
# redis-benchmark pinned to different CPUs, in interleaved rounds.
#
#   benches/programs/redis_rps.sh ROUNDS REQUESTS [NAME=LIB[,VAR=VALUE...] ...]
#
# VAR=VALUE after a library sets that variable for its server only (two
# entries with one library and different SHRINKALLOC_* settings compare
# the settings, paired like allocators).
# On a 2-core machine the harness (run.py) lets the server and
# redis-benchmark share both cores, and requests per second move by 10-30%
# between two runs of one library. Here the server runs on CPU 0 and the
# client on CPU 1 (`taskset`), each round runs every allocator once, the
# order rotated from round to round, and the medians are printed, with each
# allocator's ratio to mimalloc; then the first allocator against each
# other, paired by round (each pair ran back to back): the geometric mean
# of the ratios over every test and round with a 95% interval, and whether
# that interval lies above 1 (ahead), below (behind) or across it. The
# requests are the harness's: SET, GET, LPUSH, LRANGE_100 with 1 KiB values
# from 50 clients, then SET and GET pipelined 16 deep (5x REQUESTS each).
# Default allocators: shrinkalloc (target/release/libshrinkalloc.so),
# glibc, jemalloc, mimalloc, tcmalloc (Debian's; glibc is "preloaded" as
# libc.so.6, as in run.py, because Debian's redis-server links
# libjemalloc).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}; requests=${2:-20000}; shift 2 || true
lib=/usr/lib/x86_64-linux-gnu
if [ $# -eq 0 ]; then
    set -- shrinkalloc=target/release/libshrinkalloc.so glibc=$lib/libc.so.6 jemalloc=$lib/libjemalloc.so.2 \
        mimalloc=$lib/libmimalloc.so.2 tcmalloc=$lib/libtcmalloc_minimal.so.4
fi
for tool in redis-server redis-benchmark redis-cli taskset python3; do
    command -v $tool >/dev/null || { echo "redis_rps: $tool is missing" >&2; exit 1; }
done
[ "$(nproc)" -ge 2 ] || { echo "redis_rps: needs 2 CPUs (server and client apart)" >&2; exit 1; }
port=26613
out=$(mktemp -d)
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
pairs=("$@")
# CPU time the server's threads have run, in ns (schedstat's first field).
server_cpu_ns() {
    local sum=0 t
    for t in /proc/$1/task/*/schedstat; do
        read -r ns _ <"$t" 2>/dev/null && sum=$((sum + ns))
    done
    echo $sum
}
n=${#pairs[@]}
for round in $(seq "$rounds"); do
    for i in $(seq 0 $((n - 1))); do
        pair=${pairs[$(((i + round) % n))]}
        name=${pair%%=*}; spec=${pair#*=}
        IFS=, read -r -a parts <<<"$spec"
        so=${parts[0]}; vars=("${parts[@]:1}")
        [ -e "$so" ] || { echo "redis_rps: $so not found" >&2; exit 1; }
        dir=$out/$name.$round; mkdir -p "$dir"
        env "${vars[@]}" LD_PRELOAD="$so" taskset -c 0 redis-server --port $port --bind 127.0.0.1 --save "" --appendonly no \
            --jemalloc-bg-thread no --dir "$dir" --logfile "$dir/log" >/dev/null 2>&1 &
        server=$!
        for _ in $(seq 150); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.1; done
        t0=$(server_cpu_ns $server)
        taskset -c 1 redis-benchmark -h 127.0.0.1 -p $port -n "$requests" -c 50 -d 1024 -r 100000 -P 1 \
            -t SET,GET,LPUSH,LRANGE_100 --csv >"$dir/plain.csv"
        t1=$(server_cpu_ns $server)
        taskset -c 1 redis-benchmark -h 127.0.0.1 -p $port -n $((requests * 5)) -c 50 -d 1024 -r 100000 -P 16 \
            -t SET,GET --csv >"$dir/piped.csv"
        t2=$(server_cpu_ns $server)
        echo "$((t1 - t0)) $((t2 - t1))" >"$dir/cpu"
        redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
        wait $server || true
    done
done
python3 - "$out" "${pairs[@]}" <<'PY'
import csv, math, os, statistics, sys
out, names = sys.argv[1], [p.split("=", 1)[0] for p in sys.argv[2:]]
# rps[test][name][round]; cpu[part][name][round]: the server's CPU ns
rps, cpu = {}, {}
for entry in sorted(os.listdir(out)):
    name, rnd = entry.rsplit(".", 1)
    if name not in names:
        continue
    for kind, suffix in (("plain.csv", ""), ("piped.csv", " -P 16")):
        for row in csv.reader(open(os.path.join(out, entry, kind))):
            test = row[0].split(" ")[0]
            if test == "test":
                continue
            rps.setdefault(test + suffix, {}).setdefault(name, {})[int(rnd)] = float(row[1])
    plain, piped = (int(x) for x in open(os.path.join(out, entry, "cpu")).read().split())
    cpu.setdefault("plain", {}).setdefault(name, {})[int(rnd)] = plain
    cpu.setdefault("-P 16", {}).setdefault(name, {})[int(rnd)] = piped
print("requests/s, median of the rounds (ratio to mimalloc)")
print(f"{'test':<16}" + "".join(f"{n:>22}" for n in names))
for test, by in rps.items():
    med = {n: statistics.median(v.values()) for n, v in by.items()}
    base = med.get("mimalloc")
    cells = [f"{med[n]:>12.0f} ({med[n] / base:.2f})" if base else f"{med[n]:>22.0f}" for n in names]
    print(f"{test:<16}" + "".join(f"{c:>22}" for c in cells))
spread = {n: [max(v[n].values()) / min(v[n].values()) for v in rps.values()] for n in names}
print("largest max/min over the rounds of one test: " + ", ".join(f"{n} {max(s):.2f}" for n, s in spread.items()))


def paired(a, b, table=None):
    """Geometric mean over every (test, round) of a's figure over b's in
    the same round (the two ran back to back), with a 95% interval (normal
    approximation on the logs); requests/s unless another table is given."""
    table = rps if table is None else table
    logs = [math.log(by[a][r] / by[b][r]) for by in table.values() for r in by[a] if r in by[b]]
    if len(logs) < 2:
        return None
    mean, sd = statistics.fmean(logs), statistics.stdev(logs)
    half = 1.96 * sd / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half), len(logs)


def verdict(res, above, below):
    """A paired result as text: the ratio, its interval, and which side of 1
    the interval lies on (`above`, `below`), if either."""
    g, lo, hi, _ = res
    side = above if lo > 1 else below if hi < 1 else "no difference shown"
    return f"{g:.3f} (95% interval {lo:.3f}-{hi:.3f}): {side}"


subject = names[0]
for peer in names[1:]:
    res = paired(subject, peer)
    if res:
        print(f"{subject}/{peer}, paired by round over {res[3]} (test, round) pairs: "
              + verdict(res, "ahead", "behind"))
        for test in rps:
            res = paired(subject, peer, {test: rps[test]})
            if res:
                print(f"    {test:<16} {verdict(res, 'ahead', 'behind')}")
# The server's CPU time for the same requests: where redis-benchmark on its
# one CPU is what limits requests/s, this is what the allocator changes.
print("server CPU time for the same requests, median of the rounds (ms)")
print(f"{'part':<16}" + "".join(f"{n:>22}" for n in names))
for part, by in cpu.items():
    print(f"{part:<16}" + "".join(f"{statistics.median(by[n].values()) / 1e6:>22.1f}" for n in names))
for peer in names[1:]:
    for part in cpu:
        res = paired(subject, peer, {part: cpu[part]})
        if res:
            print(f"{subject}/{peer} server CPU, {part}, paired over {res[3]} rounds: "
                  + verdict(res, "more", "less"))
PY
