#!/usr/bin/env python3
"""The footprint floor of size-class pages on three harness workloads.

An allocator that keeps each size class on pages of its own (shrinkalloc,
mimalloc, jemalloc, tcmalloc) holds, for every class, at least as many
blocks as that class ever had live at once: a block freed in a page that
still holds others cannot serve another class. Its footprint is bounded
below by the *sum over classes of each class's peak*, while a
best-fit allocator that coalesces (glibc) needs only the peak of the sum.
This script replays the allocation pattern of `perthread`, `prodcons` and
`mix` (the same size distributions and lifetimes as the C programs, one
thread; the harness runs two) through shrinkalloc's classes and prints both.

    python3 benches/programs/class_peaks.py [--seed N]

The class table is size_class.rs's: multiples of 8 up to 128 bytes, then 4
per power of two, plus the header classes 1,088, 2,176 and 4,352 bytes.
Pages, carving and headers come on top of the printed floor.

Two questions about that floor can be put to the same replays:

    python3 benches/programs/class_peaks.py --per-doubling 2   # coarser classes
    python3 benches/programs/class_peaks.py --borrow-above 1024 --borrow-reach 2

`--per-doubling N` replaces the 4 classes per power of two above 128 bytes
by N (rounded to 16 bytes). `--borrow-above B --borrow-reach K` models
borrowing (`alloc.rs`, `borrow_larger`): a request of a class above B bytes
whose class holds no free block takes a free block of one of the next K
classes that holds one, instead of growing its own class; each class then
holds its high-water mark of blocks of its own, and the floor printed is
the sum of those. Both print the peak of the live total in requested bytes
too, since the class rounding then differs.
"""

import argparse
import bisect
import collections
import random


def classes(per_doubling=4):
    sizes = {8 * i for i in range(1, 17)} | {1088, 2176, 4352}
    b = 128
    while b < 1 << 20:
        if per_doubling == 4:
            sizes |= {b + b * k // 4 for k in range(1, 5)}
        else:
            sizes |= {int(b * 2 ** (k / per_doubling)) // 16 * 16 for k in range(1, per_doubling + 1)}
        b *= 2
    return sorted(sizes)


CLASSES = classes()


class Tally:
    """Live blocks per class, each class's peak, and the peak of the total."""

    def __init__(self):
        self.live = collections.Counter()
        self.peak = collections.Counter()
        self.total = 0
        self.max_total = 0

    def alloc(self, size):
        c = bisect.bisect_left(CLASSES, size)
        self.live[c] += 1
        self.peak[c] = max(self.peak[c], self.live[c])
        self.total += CLASSES[c]
        self.max_total = max(self.max_total, self.total)
        return c

    def free(self, c):
        if c is not None:
            self.live[c] -= 1
            self.total -= CLASSES[c]

    def report(self, name):
        peaks = sum(n * CLASSES[c] for c, n in self.peak.items())
        print(f"{name:10} peak of the live total {self.max_total / 2**20:6.2f} MiB, "
              f"sum of class peaks {peaks / 2**20:6.2f} MiB ({peaks / self.max_total:.2f}x)")


class Borrowing:
    """Each class's own blocks (its high-water mark) and how many are live;
    a request of a class above `above` bytes with none free takes a free
    block of one of the next `reach` classes. Counts requested bytes."""

    def __init__(self, above, reach):
        self.above, self.reach = above, reach
        self.live = collections.Counter()
        self.own = collections.Counter()
        self.total = self.max_total = self.requests = self.borrowed = 0

    def alloc(self, size):
        c = bisect.bisect_left(CLASSES, size)
        use = c
        if self.live[c] >= self.own[c]:
            lenders = range(c + 1, min(c + 1 + self.reach, len(CLASSES))) if CLASSES[c] > self.above else ()
            use = next((d for d in lenders if self.live[d] < self.own[d]), c)
            if use == c:
                self.own[c] += 1
            else:
                self.borrowed += 1
        self.live[use] += 1
        self.requests += 1
        self.total += size
        self.max_total = max(self.max_total, self.total)
        return use, size

    def free(self, block):
        if block is not None:
            self.live[block[0]] -= 1
            self.total -= block[1]

    def report(self, name):
        held = sum(n * CLASSES[c] for c, n in self.own.items())
        print(f"{name:10} peak of the live total {self.max_total / 2**20:6.2f} MiB requested, "
              f"blocks held {held / 2**20:6.2f} MiB ({held / self.max_total:.2f}x), "
              f"{100 * self.borrowed / self.requests:.1f}% of requests borrowed")


def perthread(rng):
    """4,096 blocks of 16 B - 1 KiB, a random one replaced 4M times."""
    t, slots = Tally(), [None] * 4096
    for _ in range(4_000_000):
        k = rng.randrange(len(slots))
        t.free(slots[k])
        slots[k] = t.alloc(rng.randint(16, 1024))
    t.report("perthread")


def prodcons(rng):
    """Log-uniform 16 B - 4 KiB, freed in order 18 batches of 64 later
    (16 queued, one being filled, one being freed)."""
    t, window = Tally(), collections.deque()
    for _ in range(2_000_000):
        b = rng.randint(4, 11)
        window.append(t.alloc((1 << b) + rng.randrange(1 << b)))
        if len(window) > 18 * 64:
            t.free(window.popleft())
    t.report("prodcons")


def mix(rng):
    """mix.c's sizes; 60% freed 8 allocations later, 30% 1,000 later, 10%
    replacing a random one of 20,000 long-lived blocks."""
    def size():
        p = rng.randrange(100)
        if p < 70:
            return rng.randint(8, 128)
        if p < 92:
            return rng.randint(129, 1024)
        if p < 99:
            return rng.randint(1025, 8192)
        return rng.randint(8193, 65536)

    t = Tally()
    stack, ring, pool = [None] * 8, [None] * 1000, [None] * 20000
    sp = rp = 0
    for _ in range(3_000_000):
        c = t.alloc(size())
        lifetime = rng.randrange(10)
        if lifetime < 6:
            arr, k, sp = stack, sp % len(stack), sp + 1
        elif lifetime < 9:
            arr, k, rp = ring, rp % len(ring), rp + 1
        else:
            arr, k = pool, rng.randrange(len(pool))
        t.free(arr[k])
        arr[k] = c
    t.report("mix")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-doubling", type=int, default=4,
                    help="classes per power of two above 128 bytes (size_class.rs: 4)")
    ap.add_argument("--borrow-above", type=int, metavar="BYTES",
                    help="model borrowing for classes above BYTES (alloc.rs: 1024)")
    ap.add_argument("--borrow-reach", type=int, default=2,
                    help="how many larger classes lend (alloc.rs: 2)")
    args = ap.parse_args()
    global CLASSES, Tally
    CLASSES = classes(args.per_doubling)
    if args.per_doubling != 4 and args.borrow_above is None:
        args.borrow_above = 1 << 30  # the same replay, counting requested bytes
    if args.borrow_above is not None:
        Tally = lambda: Borrowing(args.borrow_above, args.borrow_reach)  # noqa: E731
    for workload in (perthread, prodcons, mix):
        workload(random.Random(args.seed))


if __name__ == "__main__":
    main()
