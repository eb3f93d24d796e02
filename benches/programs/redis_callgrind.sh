#!/bin/bash
# Instructions redis-server executes for a fixed set of requests, under each
# allocator by LD_PRELOAD (callgrind: noise-free, unlike requests per second
# on a machine whose two cores the server and redis-benchmark share).
#
#   benches/programs/redis_callgrind.sh [NAME=LIB ...]
#
# Default: shrinkalloc (target/release/libshrinkalloc.so), mimalloc and
# jemalloc (Debian's). The requests are the harness's (run.py): SET, GET,
# LPUSH and LRANGE_100 with 1 KiB values, 3,000 each from 50 clients, then
# SET and GET pipelined 16 deep, 15,000 each. Prints the server's total
# instructions per allocator; the difference between two rows is the
# difference in allocator work (redis's own work is the same in each).
set -euo pipefail
cd "$(dirname "$0")/../.."
lib=/usr/lib/x86_64-linux-gnu
if [ $# -eq 0 ]; then
    set -- shrinkalloc=target/release/libshrinkalloc.so mimalloc=$lib/libmimalloc.so.2 jemalloc=$lib/libjemalloc.so.2
fi
for tool in valgrind callgrind_annotate redis-server redis-benchmark redis-cli; do
    command -v $tool >/dev/null || { echo "redis_callgrind: $tool is missing" >&2; exit 1; }
done
port=26602
out=$(mktemp -d)
trap 'redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
printf '%-14s %16s\n' allocator instructions
for pair in "$@"; do
    name=${pair%%=*}; so=${pair#*=}
    [ -e "$so" ] || { echo "redis_callgrind: $so not found" >&2; exit 1; }
    dir=$out/$name; mkdir -p "$dir"
    LD_PRELOAD=$so valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        redis-server --port $port --bind 127.0.0.1 --save "" --appendonly no \
        --jemalloc-bg-thread no --dir "$dir" --logfile "$dir/log" >/dev/null 2>"$dir/vg.log" &
    server=$!
    for _ in $(seq 150); do redis-cli -p $port ping >/dev/null 2>&1 && break; sleep 0.2; done
    redis-benchmark -h 127.0.0.1 -p $port -n 3000 -c 50 -d 1024 -r 100000 -P 1 \
        -t SET,GET,LPUSH,LRANGE_100 --csv >/dev/null
    redis-benchmark -h 127.0.0.1 -p $port -n 15000 -c 50 -d 1024 -r 100000 -P 16 \
        -t SET,GET --csv >/dev/null
    redis-cli -p $port shutdown nosave >/dev/null 2>&1 || true
    wait $server || true
    total=$(callgrind_annotate "$dir/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    printf '%-14s %16s\n' "$name" "$total"
done
