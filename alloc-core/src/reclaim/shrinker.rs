//! The shrinker contract: what reclaim asks of a cache, and what it promises.
//!
//! A [`Shrinker`] is asked two questions, in its own unit of objects: how
//! many could be freed now ([`Shrinker::count`]), and to free up to a given
//! number ([`Shrinker::scan`]). Reclaim decides how many to ask for from the
//! count, the shrinker's `seeks` (what an object costs to rebuild) and the
//! pressure [`Level`]; the arithmetic lives in `reclaim/mod.rs`.
//!
//! Invariant: reclaim calls a shrinker only from a thread whose scope mask
//! allows the shrinker's [`Needs`]; never after its handle's unregistration
//! has returned; and with the calling thread marked `RECLAIMING`, so that
//! whatever the callback allocates never recurses into reclaim.
//!
//! # What a callback must never do
//!
//! - Wait for memory to be freed by someone else, or for a thread that may
//!   itself be allocating under the hard limit: reclaim runs inside
//!   allocation, so such a wait can be a wait on itself.
//! - Take a lock that its [`Needs`] do not declare: a shrinker that may block
//!   on a filesystem lock must say [`Needs::FS`], otherwise a thread holding
//!   that lock (in a `NOFS` scope) can deadlock in its own allocation.
//! - Assume it runs alone: `count` and `scan` may run concurrently on several
//!   threads (direct reclaim in allocating threads, background reclaimers).
//! - Unwind: a panic is caught at the boundary, and the shrinker is disabled
//!   for good (a C host built with `panic = "abort"` dies instead).

use core::fmt;
use core::ops::BitOr;

use super::scope::{ContextClass, ScopeFlags};

/// How hard reclaim is pushing: `None < Low < Medium < Critical`.
///
/// `None` reclaims only the allocator's own free pages; `Low` is the
/// background reclaimer's level just past the soft limit; `Medium` halfway
/// to the hard limit; `Critical` an allocation that does not fit under it.
///
/// ```
/// use shrinkalloc::reclaim::Level;
/// assert!(Level::None < Level::Low && Level::Medium < Level::Critical);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// No pressure: purge free pages, ask no shrinker.
    #[default]
    None,
    /// Past the soft limit.
    Low,
    /// Well past the soft limit, nearing the hard one.
    Medium,
    /// At the hard limit: an allocation waits on this reclaim.
    Critical,
}

impl Level {
    /// The level's lower-case name, as statistics print it.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::Level::Critical.name(), "critical");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::Critical => "critical",
        }
    }

    pub(crate) const fn from_index(i: usize) -> Self {
        match i {
            0 => Level::None,
            1 => Level::Low,
            2 => Level::Medium,
            _ => Level::Critical,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`Shrinker::count`] reports. A shrinker that counts nothing is
/// never asked to scan.
///
/// ```
/// use shrinkalloc::reclaim::{reclaim, register, CountResult, Level, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
/// struct Empty;
/// impl Shrinker for Empty {
///     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Empty }
///     fn scan(&self, _: &ShrinkControl) -> ScanResult { unreachable!("nothing was counted") }
/// }
/// let h = register(Empty, ShrinkerOptions::new("empty"));
/// reclaim(usize::MAX, Level::Critical);
/// assert!(h.stats().count_calls > 0);
/// assert_eq!(h.stats().scan_calls, 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountResult {
    /// This many objects could be freed now (0: none at the moment).
    Count(usize),
    /// The cache holds no objects at all (the kernel's `SHRINK_EMPTY`).
    Empty,
}

/// What [`Shrinker::scan`] reports. After `Stop` the shrinker is asked no
/// more in that round; what was not scanned is owed to it.
///
/// ```
/// use shrinkalloc::reclaim::{reclaim, register, CountResult, Level, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
/// struct Busy;
/// impl Shrinker for Busy {
///     fn count(&self, _: &ShrinkControl) -> CountResult { CountResult::Count(1000) }
///     fn scan(&self, _: &ShrinkControl) -> ScanResult { ScanResult::Stop }
/// }
/// let h = register(Busy, ShrinkerOptions::new("busy").batch(10));
/// reclaim(usize::MAX, Level::Critical);
/// let s = h.stats();
/// assert_eq!(s.stops, s.scan_calls, "one scan per round, each stopped");
/// assert!(s.stops > 0 && s.objects_freed == 0 && s.deferred > 0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanResult {
    /// This many objects were freed (possibly fewer than asked, or 0).
    Freed(usize),
    /// No progress is possible now, e.g. a lock could not be taken without
    /// waiting (the kernel's `SHRINK_STOP`): reclaim stops asking this
    /// shrinker in the current round and owes the rest for later.
    Stop,
}

/// What reclaim tells a shrinker about the call it is making.
///
/// ```
/// use shrinkalloc::reclaim::{Level, ShrinkControl};
/// let sc = ShrinkControl::new(128, Level::Low);
/// assert_eq!((sc.nr_to_scan(), sc.level()), (128, Level::Low));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkControl {
    pub(crate) nr_to_scan: usize,
    pub(crate) level: Level,
    pub(crate) scope: ScopeFlags,
    pub(crate) target_bytes: usize,
    pub(crate) priority: u32,
}

impl ShrinkControl {
    /// A control as reclaim would pass it, for calling a shrinker in tests:
    /// no scope restriction, no byte target, priority 0.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Level, ShrinkControl, ScopeFlags};
    /// assert_eq!(ShrinkControl::new(10, Level::Critical).scope(), ScopeFlags::NONE);
    /// ```
    pub const fn new(nr_to_scan: usize, level: Level) -> Self {
        Self { nr_to_scan, level, scope: ScopeFlags::NONE, target_bytes: 0, priority: 0 }
    }

    /// Objects to scan in this `scan` call (at most the shrinker's batch);
    /// 0 in `count`.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{Level, ShrinkControl};
    /// assert_eq!(ShrinkControl::new(7, Level::Low).nr_to_scan(), 7);
    /// ```
    pub const fn nr_to_scan(&self) -> usize {
        self.nr_to_scan
    }

    /// The pressure level of the pass.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{Level, ShrinkControl};
    /// assert_eq!(ShrinkControl::new(1, Level::Medium).level(), Level::Medium);
    /// ```
    pub const fn level(&self) -> Level {
        self.level
    }

    /// The effective scope mask of the reclaiming thread (`NOIO` already
    /// implies `NOFS`): what the callback must not do beyond its `needs`.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{Level, ShrinkControl};
    /// assert!(ShrinkControl::new(1, Level::Low).scope().is_empty());
    /// ```
    pub const fn scope(&self) -> ScopeFlags {
        self.scope
    }

    /// Bytes the pass still wants to free, across all shrinkers: a hint for
    /// caches whose objects vary in size.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{Level, ShrinkControl};
    /// assert_eq!(ShrinkControl::new(1, Level::Low).target_bytes(), 0);
    /// ```
    pub const fn target_bytes(&self) -> usize {
        self.target_bytes
    }

    /// The pass's priority, 12 (gentle) down to 0 (everything): the share of
    /// the count reclaim asks for is about `count >> priority`.
    ///
    /// ```
    /// # use shrinkalloc::reclaim::{Level, ShrinkControl};
    /// assert_eq!(ShrinkControl::new(1, Level::Low).priority(), 0);
    /// ```
    pub const fn priority(&self) -> u32 {
        self.priority
    }
}

/// The contexts a shrinker's `scan` may enter, declared at registration.
/// Reclaim from a thread whose scope forbids one of them skips the shrinker.
///
/// ```
/// use shrinkalloc::reclaim::{Needs, ScopeFlags};
/// assert!(!Needs::FS.allowed_in(ScopeFlags::NOFS));
/// assert!(Needs::IO.allowed_in(ScopeFlags::NOFS));
/// assert!(!Needs::IO.allowed_in(ScopeFlags::NOIO));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Needs(u32);

impl Needs {
    /// Neither filesystem nor I/O: callable from any scope.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ScopeFlags};
    /// assert!(Needs::NONE.allowed_in(ScopeFlags::NOIO));
    /// ```
    pub const NONE: Self = Self(0);
    /// May take filesystem locks or re-enter the filesystem.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ScopeFlags};
    /// assert!(Needs::FS.allowed_in(ScopeFlags::NONE));
    /// ```
    pub const FS: Self = Self(1);
    /// May start or wait for block I/O.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ScopeFlags};
    /// assert!(!(Needs::FS | Needs::IO).allowed_in(ScopeFlags::NOFS));
    /// ```
    pub const IO: Self = Self(2);

    /// Whether a shrinker with these needs may run under `scope`
    /// (`NOIO` implying `NOFS`).
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ScopeFlags};
    /// assert!(!Needs::FS.allowed_in(ScopeFlags::NOIO));
    /// ```
    pub const fn allowed_in(self, scope: ScopeFlags) -> bool {
        let scope = scope.effective();
        !(self.0 & Self::FS.0 != 0 && scope.contains(ScopeFlags::NOFS)
            || self.0 & Self::IO.0 != 0 && scope.contains(ScopeFlags::NOIO))
    }

    /// The most restricted class whose scope still allows these needs'
    /// shrinkers: a shrinker's background reclaimer is the one of that class.
    pub(crate) const fn class(self) -> ContextClass {
        if self.0 & Self::FS.0 != 0 {
            ContextClass::Normal
        } else if self.0 & Self::IO.0 != 0 {
            ContextClass::Nofs
        } else {
            ContextClass::Noio
        }
    }

    /// `"fs"`, `"io"`, `"fs+io"` or `"none"`, as statistics print it.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::Needs::FS.name(), "fs");
    /// ```
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "none",
            1 => "fs",
            2 => "io",
            _ => "fs+io",
        }
    }
}

impl BitOr for Needs {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The kernel's `DEFAULT_SEEKS`.
///
/// ```
/// use shrinkalloc::reclaim::{ShrinkerOptions, DEFAULT_SEEKS};
/// assert_eq!(ShrinkerOptions::new("c").get_seeks(), DEFAULT_SEEKS);
/// ```
pub const DEFAULT_SEEKS: u32 = 2;
/// The kernel's `SHRINK_BATCH`: objects per `scan` call unless set.
///
/// ```
/// use shrinkalloc::reclaim::{ShrinkerOptions, DEFAULT_BATCH};
/// assert_eq!(ShrinkerOptions::new("c").get_batch(), DEFAULT_BATCH);
/// ```
pub const DEFAULT_BATCH: usize = 128;

/// How a shrinker is registered: a name for statistics, its [`Needs`],
/// `seeks` and `batch`. Built with chained setters.
///
/// ```
/// use shrinkalloc::reclaim::{Needs, ShrinkerOptions};
/// let o = ShrinkerOptions::new("inode-cache").needs(Needs::FS).seeks(4).batch(32);
/// assert_eq!((o.name(), o.get_seeks(), o.get_batch()), ("inode-cache", 4, 32));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShrinkerOptions {
    name: String,
    needs: Needs,
    seeks: u32,
    batch: usize,
}

impl ShrinkerOptions {
    /// Options named `name`: needs nothing, `seeks` 2, `batch` 128.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ShrinkerOptions};
    /// assert_eq!(ShrinkerOptions::new("c").get_needs(), Needs::NONE);
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), needs: Needs::NONE, seeks: DEFAULT_SEEKS, batch: DEFAULT_BATCH }
    }

    /// Declares the contexts `scan` may enter.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ShrinkerOptions};
    /// assert_eq!(ShrinkerOptions::new("c").needs(Needs::IO).get_needs(), Needs::IO);
    /// ```
    pub fn needs(mut self, needs: Needs) -> Self {
        self.needs = needs;
        self
    }

    /// Relative cost of rebuilding an object (kernel default 2). Reclaim
    /// asks for `count * 4 / seeks` per round at priority 0, so a cache with
    /// `seeks` 8 is scanned a quarter as hard as one with 2; 0 means free to
    /// rebuild (half the count per round whatever the priority).
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::ShrinkerOptions::new("c").seeks(0).get_seeks(), 0);
    /// ```
    pub fn seeks(mut self, seeks: u32) -> Self {
        self.seeks = seeks;
        self
    }

    /// Objects per `scan` call (kernel default 128; 0 restores it). Work
    /// smaller than a batch is owed until it adds up to one, unless it
    /// covers the whole count: caches of few large objects want a small batch.
    ///
    /// ```
    /// use shrinkalloc::reclaim::ShrinkerOptions;
    /// assert_eq!(ShrinkerOptions::new("c").batch(0).get_batch(), 128);
    /// ```
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = if batch == 0 { DEFAULT_BATCH } else { batch };
        self
    }

    /// The name statistics print.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::ShrinkerOptions::new("dentry").name(), "dentry");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared needs.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Needs, ShrinkerOptions};
    /// assert_eq!(ShrinkerOptions::new("c").needs(Needs::FS).get_needs(), Needs::FS);
    /// ```
    pub fn get_needs(&self) -> Needs {
        self.needs
    }

    /// The rebuild cost.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::ShrinkerOptions::new("c").get_seeks(), 2);
    /// ```
    pub fn get_seeks(&self) -> u32 {
        self.seeks
    }

    /// The batch size.
    ///
    /// ```
    /// assert_eq!(shrinkalloc::reclaim::ShrinkerOptions::new("c").get_batch(), 128);
    /// ```
    pub fn get_batch(&self) -> usize {
        self.batch
    }
}

/// A cache that can give memory back. See the module documentation for
/// what a callback must never do.
///
/// Both methods count in the shrinker's own unit (objects, entries, pages):
/// reclaim only compares `scan`'s result with what it asked for, and
/// measures bytes itself by how much the allocator's committed memory drops.
///
/// ```
/// use std::sync::Mutex;
/// use shrinkalloc::reclaim::{register, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerOptions};
///
/// struct Cache(Mutex<Vec<Box<[u8]>>>);
///
/// impl Shrinker for Cache {
///     fn count(&self, _: &ShrinkControl) -> CountResult {
///         match self.0.lock().unwrap().len() {
///             0 => CountResult::Empty,
///             n => CountResult::Count(n),
///         }
///     }
///     fn scan(&self, sc: &ShrinkControl) -> ScanResult {
///         // Never wait for the lock: reclaim may run in the thread holding it.
///         let Ok(mut v) = self.0.try_lock() else { return ScanResult::Stop };
///         let n = sc.nr_to_scan().min(v.len());
///         let keep = v.len() - n;
///         v.truncate(keep);
///         ScanResult::Freed(n)
///     }
/// }
///
/// let handle = register(Cache(Mutex::new(vec![vec![0; 4096].into(); 8])), ShrinkerOptions::new("blocks"));
/// shrinkalloc::reclaim::reclaim(usize::MAX, shrinkalloc::reclaim::Level::Critical);
/// assert_eq!(handle.stats().objects_freed, 8, "an unbounded pass empties the cache");
/// ```
pub trait Shrinker: Send + Sync + 'static {
    /// How many objects could be freed now, or [`CountResult::Empty`]. Must be
    /// cheap and must not block: it is called on every reclaim round.
    fn count(&self, sc: &ShrinkControl) -> CountResult;

    /// Frees up to `sc.nr_to_scan()` objects and says how many it freed, or
    /// [`ScanResult::Stop`] when it cannot make progress without waiting.
    fn scan(&self, sc: &ShrinkControl) -> ScanResult;
}
