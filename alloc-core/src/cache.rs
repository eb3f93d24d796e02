//! `cache::Lru`: a thread-safe key-value cache that sizes itself by the
//! memory the process has, not by a capacity fixed in advance.
//!
//! It registers its own shrinker: under pressure reclaim asks it to evict,
//! and it evicts its coldest entries; nothing else evicts (but
//! [`Lru::shrink`]). Lookups (`get`) return a clone of the value, so big
//! values belong in an `Arc`. Sizes are reported in entries
//! ([`Lru::entry_count`], also the shrinker's count: reclaim measures bytes
//! itself) and in bytes by a weigher ([`Lru::weighted_size`]).
//!
//! Layout: shards chosen by the key's hash, each a mutex over a hashbrown
//! `HashTable` of slot indices, a slab of slots and an intrusive list
//! through the slots (coldest at `head`). Invariant, per shard under its
//! lock: the table holds exactly the indices of the used slots, the list
//! links exactly those slots, and `len`/`weight` count them and their
//! weights. Reclaim never waits for a shard: its scan *tries* each lock
//! (a thread holding one may be allocating, and so running this very
//! reclaim) and skips busy shards, saying `Stop` when it could take none.
//! Evicted entries are dropped after the lock is released.

use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use hashbrown::HashTable;

use crate::reclaim::{
    register, CountResult, Needs, ScanResult, ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions,
};

/// No slot: the end of a list.
const NIL: u32 = u32::MAX;

/// A weigher: an entry's size in bytes.
type Weigher<K, V> = dyn Fn(&K, &V) -> usize + Send + Sync;

struct Node<K, V> {
    key: K,
    value: V,
    hash: u64,
    weight: usize,
    prev: u32,
    next: u32,
}

enum Slot<K, V> {
    Used(Node<K, V>),
    /// A free slot: the next free one, or `NIL`.
    Free(u32),
}

/// One shard's data, behind its mutex.
struct Shard<K, V> {
    table: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    free: u32,
    /// Coldest entry (evicted first), or `NIL`.
    head: u32,
    /// Hottest entry, or `NIL`.
    tail: u32,
}

/// A shard and its counts, readable without the lock.
#[repr(align(64))]
struct ShardSlot<K, V> {
    lock: Mutex<Shard<K, V>>,
    len: AtomicUsize,
    weight: AtomicUsize,
}

struct Shared<K, V> {
    shards: Box<[ShardSlot<K, V>]>,
    hasher: RandomState,
    weigher: Box<Weigher<K, V>>,
    evicted: AtomicU64,
    /// Where the next walk starts, so that rounding favours no shard.
    cursor: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, V> Shard<K, V> {
    fn new() -> Self {
        Self { table: HashTable::new(), slots: Vec::new(), free: NIL, head: NIL, tail: NIL }
    }

    fn node(&self, i: u32) -> &Node<K, V> {
        match &self.slots[i as usize] {
            Slot::Used(n) => n,
            Slot::Free(_) => unreachable!("cache::Lru: a listed slot is free"),
        }
    }

    fn node_mut(&mut self, i: u32) -> &mut Node<K, V> {
        match &mut self.slots[i as usize] {
            Slot::Used(n) => n,
            Slot::Free(_) => unreachable!("cache::Lru: a listed slot is free"),
        }
    }

    fn find<Q: Eq + ?Sized>(&self, hash: u64, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
    {
        self.table.find(hash, |&i| self.node(i).key.borrow() == key).copied()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = self.node(i);
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.node_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.node_mut(n).prev = prev,
        }
    }

    fn push_tail(&mut self, i: u32) {
        let tail = self.tail;
        {
            let n = self.node_mut(i);
            n.prev = tail;
            n.next = NIL;
        }
        match tail {
            NIL => self.head = i,
            t => self.node_mut(t).next = i,
        }
        self.tail = i;
    }

    fn touch(&mut self, i: u32) {
        if self.tail != i {
            self.unlink(i);
            self.push_tail(i);
        }
    }

    fn insert_new(&mut self, node: Node<K, V>) {
        let hash = node.hash;
        let i = match self.free {
            NIL => {
                self.slots.push(Slot::Used(node));
                (self.slots.len() - 1) as u32
            }
            f => {
                self.free = match self.slots[f as usize] {
                    Slot::Free(next) => next,
                    Slot::Used(_) => unreachable!("cache::Lru: the free list holds a used slot"),
                };
                self.slots[f as usize] = Slot::Used(node);
                f
            }
        };
        let Shard { table, slots, .. } = self;
        table.insert_unique(hash, i, |&j| match &slots[j as usize] {
            Slot::Used(n) => n.hash,
            Slot::Free(_) => 0,
        });
        self.push_tail(i);
    }

    /// Takes entry `i` out of the table, the list and the slab.
    fn remove(&mut self, i: u32) -> Node<K, V> {
        self.unlink(i);
        let hash = self.node(i).hash;
        if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        let slot = core::mem::replace(&mut self.slots[i as usize], Slot::Free(self.free));
        self.free = i;
        match slot {
            Slot::Used(n) => n,
            Slot::Free(_) => unreachable!("cache::Lru: removed a free slot"),
        }
    }
}

impl<K: Hash + Eq, V> Shared<K, V> {
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &ShardSlot<K, V> {
        // The top bits: hashbrown's table uses the low ones.
        &self.shards[((hash >> 32) as usize) % self.shards.len()]
    }

    fn entry_count(&self) -> usize {
        // Relaxed: a count is an estimate the moment it is read.
        self.shards.iter().map(|s| s.len.load(Ordering::Relaxed)).sum()
    }

    /// Evicts up to `quota` coldest entries of one shard; `None` if its
    /// lock was busy and `wait` is false.
    fn evict_shard(&self, s: &ShardSlot<K, V>, quota: usize, wait: bool) -> Option<Vec<Node<K, V>>> {
        // Allocated before the lock is taken, and dropped after it is released.
        let mut out = Vec::with_capacity(quota.min(1024));
        let mut g = if wait {
            lock(&s.lock)
        } else {
            match s.lock.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            }
        };
        while out.len() < quota && g.head != NIL {
            let head = g.head;
            let node = g.remove(head);
            // Relaxed: counts; the lock orders the data.
            s.len.fetch_sub(1, Ordering::Relaxed);
            s.weight.fetch_sub(node.weight, Ordering::Relaxed);
            out.push(node);
        }
        drop(g);
        Some(out)
    }

    /// Evicts about `nr` entries, coldest first in each shard and from each
    /// in proportion to its length; returns how many, and whether a shard
    /// was skipped because it was busy.
    fn evict(&self, nr: usize, wait: bool) -> (usize, bool) {
        let total = self.entry_count();
        if total == 0 || nr == 0 {
            return (0, false);
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let (mut freed, mut busy) = (0, false);
        for k in 0..self.shards.len() {
            let s = &self.shards[(start + k) % self.shards.len()];
            let len = s.len.load(Ordering::Relaxed);
            if len == 0 {
                continue;
            }
            // Rounded up, so that small shards are not starved, and capped
            // by what is left, so that the walk never takes more than asked.
            let share = if nr >= total { len } else { (nr as u128 * len as u128).div_ceil(total as u128) as usize };
            match self.evict_shard(s, share.min(nr - freed), wait) {
                Some(out) => freed += out.len(),
                None => busy = true,
            }
            if freed >= nr {
                break;
            }
        }
        self.evicted.fetch_add(freed as u64, Ordering::Relaxed);
        (freed, busy)
    }
}

/// The cache's shrinker: counts entries, evicts the coldest.
struct LruShrinker<K, V>(Arc<Shared<K, V>>);

impl<K, V> Shrinker for LruShrinker<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn count(&self, _: &ShrinkControl) -> CountResult {
        match self.0.entry_count() {
            0 => CountResult::Empty,
            n => CountResult::Count(n),
        }
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        match self.0.evict(sc.nr_to_scan(), false) {
            (0, true) => ScanResult::Stop,
            (n, _) => ScanResult::Freed(n),
        }
    }
}

/// A thread-safe, sharded LRU cache that evicts its coldest entries when
/// reclaim asks, through the shrinker it registers at creation (and
/// unregisters when dropped). Values are returned by clone: put big ones in
/// an `Arc`.
///
/// ```
/// use std::sync::Arc;
/// use shrinkalloc::cache::Lru;
/// use shrinkalloc::reclaim::{reclaim, Level};
///
/// let cache: Lru<u64, Arc<[u8]>> = Lru::builder("blocks").weigher(|_, v: &Arc<[u8]>| v.len()).build();
/// for k in 0..100 {
///     cache.insert(k, vec![k as u8; 4096].into());
/// }
/// assert_eq!(cache.get(&7).unwrap()[0], 7); // 7 is now the hottest entry
/// assert_eq!((cache.entry_count(), cache.weighted_size()), (100, 100 * 4096));
/// reclaim(usize::MAX, Level::Critical); // pressure: the cache gives back
/// assert!(cache.entry_count() < 100);
/// ```
pub struct Lru<K, V> {
    handle: Option<ShrinkerHandle>,
    shared: Arc<Shared<K, V>>,
}

/// How an [`Lru`] is built: its shrinker's name and [`Needs`], `seeks`, a
/// weigher and the number of shards.
///
/// ```
/// use shrinkalloc::cache::Lru;
/// use shrinkalloc::reclaim::Needs;
/// let c: Lru<String, String> =
///     Lru::builder("names").needs(Needs::NONE).seeks(4).shards(8).weigher(|k: &String, v: &String| k.len() + v.len()).build();
/// c.insert("a".into(), "bc".into());
/// assert_eq!(c.weighted_size(), 3);
/// ```
#[must_use = "call build() to make the cache"]
pub struct LruBuilder<K, V> {
    options: ShrinkerOptions,
    shards: usize,
    weigher: Box<Weigher<K, V>>,
    register: bool,
}

impl<K, V> LruBuilder<K, V> {
    /// Declares what evicting may do (its shrinker's [`Needs`]); the
    /// default, `Needs::NONE`, fits any cache whose values' `Drop` only
    /// frees memory: the scan never waits for a lock.
    ///
    /// ```
    /// use shrinkalloc::{cache::Lru, reclaim::Needs};
    /// let _c: Lru<u32, u32> = Lru::builder("inodes").needs(Needs::FS).build();
    /// ```
    pub fn needs(mut self, needs: Needs) -> Self {
        self.options = self.options.needs(needs);
        self
    }

    /// The cost of rebuilding an entry, as a shrinker's `seeks` (default 2).
    ///
    /// ```
    /// let _c: shrinkalloc::cache::Lru<u32, u32> = shrinkalloc::cache::Lru::builder("c").seeks(8).build();
    /// ```
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.options = self.options.seeks(seeks);
        self
    }

    /// An entry's size in bytes, for [`Lru::weighted_size`]; by default
    /// `size_of::<(K, V)>()`. Called once per insert, without a lock held.
    ///
    /// ```
    /// use shrinkalloc::cache::Lru;
    /// let c: Lru<u32, Vec<u8>> = Lru::builder("c").weigher(|_, v: &Vec<u8>| v.len()).build();
    /// c.insert(1, vec![0; 10]);
    /// assert_eq!(c.weighted_size(), 10);
    /// ```
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> usize + Send + Sync + 'static) -> Self {
        self.weigher = Box::new(weigher);
        self
    }

    /// Shards (default: 4 per CPU, at least 8, at most 256): more shards,
    /// fewer threads meeting on one lock.
    ///
    /// ```
    /// let _c: shrinkalloc::cache::Lru<u32, u32> = shrinkalloc::cache::Lru::builder("c").shards(1).build();
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Builds the cache without registering its shrinker: nothing evicts
    /// but [`Lru::shrink`]. For comparisons (a run that must not reclaim).
    ///
    /// ```
    /// use shrinkalloc::{cache::Lru, reclaim::{reclaim, Level}};
    /// let c: Lru<u32, u32> = Lru::builder("kept").without_shrinker().build();
    /// c.insert(1, 1);
    /// reclaim(usize::MAX, Level::Critical);
    /// assert_eq!(c.entry_count(), 1);
    /// ```
    pub fn without_shrinker(mut self) -> Self {
        self.register = false;
        self
    }

    /// Makes the cache and registers its shrinker.
    ///
    /// ```
    /// let c: shrinkalloc::cache::Lru<u32, u32> = shrinkalloc::cache::Lru::builder("c").build();
    /// assert_eq!(c.entry_count(), 0);
    /// ```
    pub fn build(self) -> Lru<K, V>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let shards = (0..self.shards)
            .map(|_| ShardSlot {
                lock: Mutex::new(Shard::new()),
                len: AtomicUsize::new(0),
                weight: AtomicUsize::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            shards,
            hasher: RandomState::new(),
            weigher: self.weigher,
            evicted: AtomicU64::new(0),
            cursor: AtomicUsize::new(0),
        });
        let handle = self.register.then(|| register(LruShrinker(shared.clone()), self.options));
        Lru { handle, shared }
    }
}

impl<K, V> Lru<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A builder for a cache whose shrinker is named `name`.
    ///
    /// ```
    /// let c: shrinkalloc::cache::Lru<u32, u32> = shrinkalloc::cache::Lru::builder("c").build();
    /// assert_eq!(c.name(), Some("c"));
    /// ```
    pub fn builder(name: impl Into<String>) -> LruBuilder<K, V> {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        LruBuilder {
            options: ShrinkerOptions::new(name),
            shards: (cpus * 4).clamp(8, 256),
            weigher: Box::new(|_, _| core::mem::size_of::<(K, V)>()),
            register: true,
        }
    }

    /// A cache with the builder's defaults.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1u8, 'x');
    /// assert_eq!(c.get(&1), Some('x'));
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self::builder(name).build()
    }

    /// The value of `key`, cloned, and the entry made the hottest.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert("k".to_string(), 1);
    /// assert_eq!(c.get("k"), Some(1));
    /// assert_eq!(c.get("x"), None);
    /// ```
    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        V: Clone,
    {
        let hash = self.shared.hash(key);
        let mut g = lock(&self.shared.shard(hash).lock);
        let i = g.find(hash, key)?;
        g.touch(i);
        Some(g.node(i).value.clone())
    }

    /// The value of `key`, cloned, without making the entry hotter: a cache
    /// read only through `peek` evicts in insertion order (FIFO), which
    /// beats LRU when a hit says nothing about the next use.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::builder("c").shards(1).build();
    /// c.insert(1, 'a');
    /// c.insert(2, 'b');
    /// assert_eq!(c.peek(&1), Some('a'));
    /// c.shrink(1); // 1 is still the coldest
    /// assert_eq!((c.peek(&1), c.peek(&2)), (None, Some('b')));
    /// ```
    pub fn peek<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        V: Clone,
    {
        let hash = self.shared.hash(key);
        let g = lock(&self.shared.shard(hash).lock);
        g.find(hash, key).map(|i| g.node(i).value.clone())
    }

    /// Whether `key` is cached; does not make it hotter.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1, ());
    /// assert!(c.contains_key(&1) && !c.contains_key(&2));
    /// ```
    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        let hash = self.shared.hash(key);
        lock(&self.shared.shard(hash).lock).find(hash, key).is_some()
    }

    /// Caches `value` under `key` as the hottest entry, replacing (and
    /// dropping) any value it had.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1, "a");
    /// c.insert(1, "b");
    /// assert_eq!((c.get(&1), c.entry_count()), (Some("b"), 1));
    /// ```
    pub fn insert(&self, key: K, value: V) {
        let hash = self.shared.hash(&key);
        let weight = (self.shared.weigher)(&key, &value);
        let s = self.shared.shard(hash);
        let mut g = lock(&s.lock);
        let old = match g.find(hash, &key) {
            Some(i) => {
                g.touch(i);
                let n = g.node_mut(i);
                let old_weight = core::mem::replace(&mut n.weight, weight);
                let old = core::mem::replace(&mut n.value, value);
                // Relaxed: counts; the lock orders the data.
                s.weight.fetch_add(weight, Ordering::Relaxed);
                s.weight.fetch_sub(old_weight, Ordering::Relaxed);
                Some(old)
            }
            None => {
                g.insert_new(Node { key, value, hash, weight, prev: NIL, next: NIL });
                s.len.fetch_add(1, Ordering::Relaxed);
                s.weight.fetch_add(weight, Ordering::Relaxed);
                None
            }
        };
        drop(g);
        drop(old);
    }

    /// Removes `key` and returns its value.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1, 10);
    /// assert_eq!((c.remove(&1), c.remove(&1)), (Some(10), None));
    /// ```
    pub fn remove<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let hash = self.shared.hash(key);
        let s = self.shared.shard(hash);
        let mut g = lock(&s.lock);
        let i = g.find(hash, key)?;
        let node = g.remove(i);
        drop(g);
        s.len.fetch_sub(1, Ordering::Relaxed);
        s.weight.fetch_sub(node.weight, Ordering::Relaxed);
        Some(node.value)
    }

    /// Removes `key` if cached (moka's name; [`Lru::remove`] returns the value).
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1, 10);
    /// c.invalidate(&1);
    /// assert_eq!(c.entry_count(), 0);
    /// ```
    pub fn invalidate<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        drop(self.remove(key));
    }

    /// Removes every entry.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// (0..10).for_each(|k| c.insert(k, k));
    /// c.invalidate_all();
    /// assert_eq!((c.entry_count(), c.weighted_size()), (0, 0));
    /// ```
    pub fn invalidate_all(&self) {
        self.shared.evict(usize::MAX, true);
    }

    /// Entries cached now (also what its shrinker counts).
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1, 1);
    /// assert_eq!(c.entry_count(), 1);
    /// ```
    pub fn entry_count(&self) -> usize {
        self.shared.entry_count()
    }

    /// The sum of the cached entries' weights, in bytes by the weigher.
    ///
    /// ```
    /// let c: shrinkalloc::cache::Lru<u8, [u8; 100]> = shrinkalloc::cache::Lru::builder("c").weigher(|_, _| 100).build();
    /// c.insert(1, [0; 100]);
    /// assert_eq!(c.weighted_size(), 100);
    /// ```
    pub fn weighted_size(&self) -> usize {
        self.shared.shards.iter().map(|s| s.weight.load(Ordering::Relaxed)).sum()
    }

    /// Evicts about `nr` of the coldest entries now, waiting for busy
    /// shards, as reclaim would without waiting; returns how many.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::builder("c").shards(1).build();
    /// (0..10).for_each(|k| c.insert(k, k));
    /// c.get(&0); // hottest now
    /// assert_eq!(c.shrink(9), 9);
    /// assert_eq!(c.get(&0), Some(0));
    /// ```
    pub fn shrink(&self, nr: usize) -> usize {
        self.shared.evict(nr, true).0
    }

    /// Entries evicted so far, by reclaim and by [`Lru::shrink`].
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// c.insert(1, 1);
    /// c.shrink(1);
    /// assert_eq!(c.evicted(), 1);
    /// ```
    pub fn evicted(&self) -> u64 {
        self.shared.evicted.load(Ordering::Relaxed)
    }

    /// Calls `f` on every entry, one shard at a time with its lock held
    /// (so `f` must not use the cache); does not change their order.
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::new("c");
    /// (1..=4).for_each(|k| c.insert(k, k * 10));
    /// let mut sum = 0;
    /// c.for_each(|_, v| sum += v);
    /// assert_eq!(sum, 100);
    /// ```
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for s in self.shared.shards.iter() {
            let g = lock(&s.lock);
            let mut i = g.head;
            while i != NIL {
                let n = g.node(i);
                f(&n.key, &n.value);
                i = n.next;
            }
        }
    }

    /// The name its shrinker was registered under (`None` when built
    /// [`without_shrinker`](LruBuilder::without_shrinker)).
    ///
    /// ```
    /// assert_eq!(shrinkalloc::cache::Lru::<u8, u8>::new("n").name(), Some("n"));
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.handle.as_ref().map(ShrinkerHandle::name)
    }

    /// Its registered shrinker, for statistics (`None` when built without).
    ///
    /// ```
    /// let c = shrinkalloc::cache::Lru::<u8, u8>::new("s");
    /// assert_eq!(c.shrinker().unwrap().stats().objects_freed, 0);
    /// ```
    pub fn shrinker(&self) -> Option<&ShrinkerHandle> {
        self.handle.as_ref()
    }
}

impl<K, V> fmt::Debug for Lru<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len: usize = self.shared.shards.iter().map(|s| s.len.load(Ordering::Relaxed)).sum();
        f.debug_struct("Lru").field("shrinker", &self.handle).field("entries", &len).finish()
    }
}
