//! The oracle: a cache scenario's trace replayed through an exact LRU of a
//! fixed byte budget, to say how many hits the limit would have allowed.
//!
//! The budget is [`BUDGET_PERCENT`] of the run's limit, counted in block
//! sizes as allocated (the rest of the limit is left for the program's other
//! memory and the allocator's overhead). A lookup ([`Kind::Hit`] or
//! [`Kind::Miss`], whatever the real cache answered) is an ideal hit when
//! the key is in the LRU, and then makes it the most recent; a
//! [`Kind::Put`] inserts or replaces the key as the most recent, and the
//! least recent keys go until the bytes fit the budget. A lookup that misses
//! inserts nothing: the scenario's own put that follows does.
//!
//! [`equivalent_budget`] answers the converse: how large an exact LRU would
//! have got the real cache's hits, which says how much of the limit the
//! real cache made use of, averaged over the run.
//!
//! Invariant of [`Lru`]: `bytes` is the sum of the sizes on its list, every
//! key on the list is in `index` exactly once, and after each put `bytes <=
//! budget` (a block larger than the budget is not kept).

use std::collections::HashMap;

use crate::trace::{Kind, Record};

/// The oracle's byte budget, as a percentage of the run's limit.
pub const BUDGET_PERCENT: usize = 75;
/// Slices of a trace whose hits against the ideal the chart plots.
pub const SERIES_WINDOWS: usize = 40;

/// What a replay found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Records replayed.
    pub records: u64,
    /// Lookups.
    pub gets: u64,
    /// Lookups the real cache answered with a hit.
    pub hits: u64,
    /// Lookups the exact LRU answered with a hit.
    pub ideal: u64,
    /// The LRU's byte budget.
    pub budget: usize,
}

impl Replay {
    /// The real cache's hits as a share of the ideal LRU's.
    pub fn ratio(&self) -> Option<f64> {
        (self.ideal > 0).then(|| self.hits as f64 / self.ideal as f64)
    }
}

/// Replays `records` (in the cache's order, see [`crate::trace::parse`])
/// through an exact LRU of `budget` bytes.
pub fn replay(records: &[Record], budget: usize) -> Replay {
    replay_series(records, budget, 0).0
}

/// [`replay`], and the running totals at the end of each of `windows`
/// equal slices of `records` (none when `windows` is 0): the difference of
/// two neighbours is that slice's hits and ideal hits, which the chart
/// plots over time.
pub fn replay_series(records: &[Record], budget: usize, windows: usize) -> (Replay, Vec<Replay>) {
    let mut lru = Lru::new(budget);
    let mut r = Replay { budget, ..Replay::default() };
    let mut series = Vec::with_capacity(windows);
    let n = records.len();
    for (i, rec) in records.iter().enumerate() {
        r.records += 1;
        match rec.kind {
            Kind::Hit | Kind::Miss => {
                r.gets += 1;
                r.hits += u64::from(rec.kind == Kind::Hit);
                r.ideal += u64::from(lru.touch(rec.key));
            }
            Kind::Put => lru.put(rec.key, rec.size as usize),
        }
        // The end of slice k is record ceil((k + 1) n / windows) - 1.
        if windows > 0 && (series.len() + 1) * n <= (i + 1) * windows {
            series.push(r);
        }
    }
    (r, series)
}

/// The smallest byte budget, to within `resolution`, at which an exact
/// LRU gets at least `hits` on `records`, searched up to `max`; `None`
/// when not even `max` does.
pub fn equivalent_budget(records: &[Record], hits: u64, max: usize, resolution: usize) -> Option<usize> {
    if replay(records, max).ideal < hits {
        return None;
    }
    // LRU hits grow with the budget: bisect on it.
    let (mut lo, mut hi) = (0, max);
    while hi - lo > resolution.max(1) {
        let mid = lo + (hi - lo) / 2;
        if replay(records, mid).ideal >= hits {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

const NIL: u32 = u32::MAX;

struct Node {
    key: u32,
    size: usize,
    prev: u32,
    next: u32,
}

/// An exact LRU of keys and sizes: a list threaded through `nodes` (most
/// recent at `head`), found by key through `index`.
struct Lru {
    index: HashMap<u32, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    bytes: usize,
    budget: usize,
}

impl Lru {
    fn new(budget: usize) -> Self {
        Lru { index: HashMap::new(), nodes: Vec::new(), free: Vec::new(), head: NIL, tail: NIL, bytes: 0, budget }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }

    /// A lookup: whether `key` is cached; if so it becomes the most recent.
    fn touch(&mut self, key: u32) -> bool {
        let Some(&i) = self.index.get(&key) else { return false };
        self.unlink(i);
        self.push_front(i);
        true
    }

    /// Inserts or replaces `key` as the most recent, then evicts the least
    /// recent until the bytes fit the budget.
    fn put(&mut self, key: u32, size: usize) {
        if let Some(&i) = self.index.get(&key) {
            self.unlink(i);
            self.bytes -= self.nodes[i as usize].size;
            self.nodes[i as usize].size = size;
            self.push_front(i);
        } else {
            let node = Node { key, size, prev: NIL, next: NIL };
            let i = match self.free.pop() {
                Some(i) => {
                    self.nodes[i as usize] = node;
                    i
                }
                None => {
                    self.nodes.push(node);
                    (self.nodes.len() - 1) as u32
                }
            };
            self.index.insert(key, i);
            self.push_front(i);
        }
        self.bytes += size;
        while self.bytes > self.budget && self.tail != NIL {
            let t = self.tail;
            self.unlink(t);
            self.bytes -= self.nodes[t as usize].size;
            self.index.remove(&self.nodes[t as usize].key);
            self.free.push(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, key: u32, size: u32, kind: Kind) -> Record {
        Record { seq, key, size, kind }
    }

    #[test]
    fn the_least_recently_used_key_goes_first() {
        use Kind::*;
        let trace = [
            rec(0, 1, 100, Put),
            rec(1, 2, 100, Put),
            rec(2, 1, 0, Hit),   // 1 is now the most recent
            rec(3, 3, 100, Put), // over 250: evicts 2, the least recent
            rec(4, 2, 0, Miss),
            rec(5, 1, 0, Hit),
            rec(6, 3, 0, Miss),  // the real cache missed; the ideal one hits
            rec(7, 4, 300, Put), // larger than the budget: everything goes
            rec(8, 1, 0, Miss),
        ];
        let r = replay(&trace, 250);
        assert_eq!(r, Replay { records: 9, gets: 5, hits: 2, ideal: 3, budget: 250 });
        assert_eq!(r.ratio(), Some(2.0 / 3.0));
        let (whole, series) = replay_series(&trace, 250, 3);
        assert_eq!((whole, series.len(), series[2]), (r, 3, r));
        assert_eq!((series[0].records, series[1].records), (3, 6));
        assert_eq!((series[0].ideal, series[1].ideal), (1, 2));
    }

    #[test]
    fn replacing_a_key_counts_its_new_size() {
        use Kind::*;
        let trace = [rec(0, 1, 100, Put), rec(1, 2, 100, Put), rec(2, 1, 200, Put), rec(3, 2, 0, Miss)];
        // 1 grew to 200: 300 bytes do not fit 250, so 2 (least recent) went.
        assert_eq!(replay(&trace, 250).ideal, 0);
        assert_eq!(replay(&trace, 300).ideal, 1);
        assert_eq!(replay(&[], 1).ratio(), None);
    }

    #[test]
    fn the_equivalent_budget_is_the_least_that_gets_as_many_hits() {
        use Kind::*;
        // Keys 1 and 2 of 100 bytes, then a hit on 1: a budget of 100
        // keeps only 2 (no hit), one of 200 keeps both (one hit).
        let trace = [rec(0, 1, 100, Put), rec(1, 2, 100, Put), rec(2, 1, 0, Hit)];
        let found = equivalent_budget(&trace, 1, 1000, 1).unwrap();
        assert_eq!(found, 200);
        assert_eq!(equivalent_budget(&trace, 0, 1000, 1), Some(1));
        assert_eq!(equivalent_budget(&trace, 2, 1000, 1), None);
    }
}
