//! `sa_lru`: the kernel's `list_lru` for C caches. Objects embed a
//! `struct sa_lru_node`; the cache adds, deletes and touches them; reclaim
//! (through the shrinker each lru registers) and `sa_lru_shrink` walk the
//! cold end and hand each node to the caller's `isolate` under the lru's
//! lock, then `dispose` every node it removed once the lock is released.
//!
//! Layout: [`SHARDS`] shards, each a mutex, a sentinel `head` (its `next` is
//! the coldest node, its `prev` the hottest) and a length. A node's shard is
//! a hash of its address, so add, del and touch find it with no lookup, and
//! adds from many threads mostly take different locks. A walk takes from
//! each shard in proportion to its length, coldest first within a shard.
//!
//! Invariant, per shard and under its lock: the nodes reachable from `head`
//! form a ring whose links point back at each other, `len` counts them, and
//! every link field of a node on the ring carries the lru's *tag* in its low
//! bits (see below). A node is off every lru exactly when both its fields
//! are 0 (callers zero it before its first add; `sa_lru_del` and the walk
//! zero it again).
//!
//! The tag is what lets a 2-pointer node say *which* lru it is on without
//! allocating: nodes are pointer-aligned, so the low bits of `prev` and
//! `next` are free; together they carry a small id that each lru claims at
//! creation from a process-wide bitmap (63 ids on 64-bit targets). So an
//! add, del or touch of a node that is on *another* lru is refused without
//! touching it, exactly, as long as fewer than 64 lrus exist at once (later
//! ones share id 0 and check only the links). A node whose neighbours'
//! links do not point back at it (freed while on the list, never zeroed)
//! aborts with a message instead of corrupting the ring.
//!
//! A walk (`Inner::walk`) never allocates: removed nodes go on a local list
//! threaded through their own `next`. `sa_lru_destroy` marks the lru dying,
//! unregisters its shrinker (the registry waits for scans in flight), then
//! waits for explicit walks on other threads; a walk of this lru on the
//! calling thread (destroy from inside `isolate` or `dispose`) is not waited
//! for: it calls no more `isolate`, disposes what it removed, and the last
//! reference frees the lru.

use core::cell::Cell;
use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use shrinkalloc::reclaim::{self, CountResult, ScanResult, ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions};

use crate::libc_semantics::set_errno;

/// Shards per lru: enough that 16 threads adding at once rarely meet.
const SHARDS: usize = 16;
/// Low bits of a node pointer that alignment leaves free (3 on 64-bit).
const ALIGN_BITS: u32 = core::mem::align_of::<SaLruNode>().trailing_zeros();
const LOW: usize = (1 << ALIGN_BITS) - 1;
/// Tags are 1..TAGS (0: shared by lrus made when all were taken).
const TAGS: usize = 1 << (2 * ALIGN_BITS);
/// `Inner::state`: destroy has begun; no new walk starts.
const DYING: usize = 1 << (usize::BITS - 1);

/// The verdicts of `enum sa_lru_verdict`.
const REMOVED: c_int = 0;
const ROTATE: c_int = 1;
const SKIP: c_int = 2;
const STOP: c_int = 3;

/// Ids in use: bit `t` set while an lru holds tag `t`.
static TAGS_USED: AtomicU64 = AtomicU64::new(1);

/// `struct sa_lru_node`: two pointers, owned by the lru while the node is
/// on it (tagged, see the module doc), both 0 while it is on none. Read and
/// written as atomics so that a racy look at a node on another lru is not
/// undefined behaviour; the shard lock orders every real change.
#[repr(C)]
pub struct SaLruNode {
    prev: AtomicUsize,
    next: AtomicUsize,
}

type Isolate = unsafe extern "C" fn(node: *mut SaLruNode, arg: *mut c_void) -> c_int;
type Dispose = unsafe extern "C" fn(node: *mut SaLruNode, arg: *mut c_void);

/// `struct sa_lru_ops`.
#[repr(C)]
pub struct SaLruOps {
    name: *const c_char,
    isolate: Option<Isolate>,
    dispose: Option<Dispose>,
    arg: *mut c_void,
    needs: c_uint,
    seeks: c_uint,
}

/// One shard: a ring of nodes around `head`, coldest at `head.next`.
#[repr(align(64))]
struct Shard {
    lock: Mutex<()>,
    head: SaLruNode,
    /// Nodes on the ring; written under `lock`, read without it by count.
    len: AtomicUsize,
}

/// The lru proper, shared by the C handle and the registered shrinker.
struct Inner {
    shards: [Shard; SHARDS],
    tag: usize,
    isolate: Isolate,
    dispose: Dispose,
    arg: *mut c_void,
    name: Box<[u8]>,
    /// `DYING` | walks in progress.
    state: AtomicUsize,
    /// Where the next walk starts, so that rounding favours no shard.
    cursor: AtomicUsize,
    /// A bad verdict was reported already (once per lru).
    bad_verdict: AtomicBool,
}

// SAFETY: the header's contract for `sa_lru_create` makes the caller promise
// that `isolate` and `dispose` may be called with `arg` from any thread,
// concurrently; `arg` is only passed back to them. The node pointers inside
// the shards are only followed under the shard's lock.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`.
unsafe impl Sync for Inner {}

/// `sa_lru`: what C holds.
pub struct SaLru {
    inner: Arc<Inner>,
    shrinker: Option<ShrinkerHandle>,
}

/// A walk in progress on this thread, linked to the one it interrupted.
struct Frame {
    inner: *const Inner,
    /// A shard of `inner` is locked by this walk (isolate is running).
    locked: Cell<bool>,
    prev: *const Frame,
}

thread_local! {
    /// The innermost walk of the calling thread. Const and destructor-free.
    static WALK: Cell<*const Frame> = const { Cell::new(ptr::null()) };
}

fn top_frame() -> *const Frame {
    WALK.try_with(Cell::get).unwrap_or(ptr::null())
}

fn set_top_frame(f: *const Frame) {
    let _ = WALK.try_with(|w| w.set(f));
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ptr_of(link: usize) -> *mut SaLruNode {
    (link & !LOW) as *mut SaLruNode
}

fn tag_of(prev: usize, next: usize) -> usize {
    (prev & LOW) | (next & LOW) << ALIGN_BITS
}

/// Writes `shrinkalloc: sa_lru 'NAME': WHAT 0xNODE` and aborts; allocates
/// nothing (a shard lock may be held, and allocation may walk this lru).
#[cold]
#[inline(never)]
fn die(name: &[u8], what: &[u8], node: *const SaLruNode) -> ! {
    report(name, what, node);
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Claims the lowest free tag, or 0 when all are taken.
fn claim_tag() -> usize {
    let mut used = TAGS_USED.load(Ordering::Relaxed);
    loop {
        let free = !used & (u64::MAX >> (64 - TAGS));
        if free == 0 {
            return 0;
        }
        let bit = free & free.wrapping_neg();
        // Relaxed: the bitmap guards no other data.
        match TAGS_USED.compare_exchange_weak(used, used | bit, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return bit.trailing_zeros() as usize,
            Err(now) => used = now,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.tag != 0 {
            TAGS_USED.fetch_and(!(1 << self.tag), Ordering::Relaxed);
        }
    }
}

impl Inner {
    fn shard_of(&self, node: *const SaLruNode) -> &Shard {
        let h = ((node as usize) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.shards[h >> (usize::BITS - SHARDS.trailing_zeros())]
    }

    fn head(shard: &Shard) -> *mut SaLruNode {
        ptr::addr_of!(shard.head).cast_mut()
    }

    /// `a.next = b; b.prev = a`, tagged.
    ///
    /// # Safety
    ///
    /// `a` and `b` are valid nodes of (or the head of) a shard whose lock
    /// the caller holds.
    unsafe fn link(&self, a: *mut SaLruNode, b: *mut SaLruNode) {
        // SAFETY: caller promise: both point to live nodes.
        let (a, b_ref) = unsafe { (&*a, &*b) };
        // Relaxed: the shard lock orders every write of a link.
        a.next.store(b as usize | self.tag >> ALIGN_BITS, Ordering::Relaxed);
        b_ref.prev.store(a as *const SaLruNode as usize | self.tag & LOW, Ordering::Relaxed);
    }

    /// Whether `node` (whose links are `p`, `n`) is on this lru: `Some(false)`
    /// off every lru, `None` on another one; aborts when its links are
    /// broken.
    ///
    /// # Safety
    ///
    /// `node` is valid; the caller holds the lock of `node`'s shard.
    unsafe fn membership(&self, node: *mut SaLruNode, op: &[u8]) -> Option<bool> {
        // SAFETY: caller promise.
        let nd = unsafe { &*node };
        let (p, n) = (nd.prev.load(Ordering::Relaxed), nd.next.load(Ordering::Relaxed));
        if p == 0 && n == 0 {
            return Some(false);
        }
        if p == 0 || n == 0 || tag_of(p, n) != self.tag {
            if p != 0 && n != 0 {
                return None;
            }
            die(&self.name, op, node);
        }
        // SAFETY: a node tagged as ours is on our ring (under the lock we
        // hold), so its neighbours are live nodes or our head, unless the
        // caller broke the contract; then the check below catches most.
        let back = unsafe { ((*ptr_of(p)).next.load(Ordering::Relaxed), (*ptr_of(n)).prev.load(Ordering::Relaxed)) };
        if ptr_of(back.0) != node || ptr_of(back.1) != node {
            die(&self.name, op, node);
        }
        Some(true)
    }

    /// Aborts if this thread is inside `isolate` of this lru: taking the
    /// shard lock again would deadlock.
    fn check_not_isolating(&self, op: &[u8], node: *const SaLruNode) {
        let mut f = top_frame();
        while !f.is_null() {
            // SAFETY: frames live on this thread's stack below us and unlink
            // themselves before returning.
            let fr = unsafe { &*f };
            if ptr::eq(fr.inner, self) && fr.locked.get() {
                die(&self.name, op, node);
            }
            f = fr.prev;
        }
    }

    /// # Safety
    ///
    /// `node` is valid (and zeroed before its first add).
    unsafe fn add(&self, node: *mut SaLruNode) -> c_int {
        self.check_not_isolating(b"sa_lru_add called from isolate (would deadlock):", node);
        let shard = self.shard_of(node);
        let _g = lock(&shard.lock);
        // SAFETY: caller promise; we hold the shard lock.
        match unsafe { self.membership(node, b"sa_lru_add of a node whose links are corrupt:") } {
            None => {
                set_errno(libc::EBUSY);
                -1
            }
            Some(true) => 0,
            Some(false) => {
                let head = Self::head(shard);
                // SAFETY: the head's links point at live ring members.
                let last = ptr_of(unsafe { (*head).prev.load(Ordering::Relaxed) });
                // SAFETY: `last`, `node` and `head` are live; lock held.
                unsafe {
                    self.link(last, node);
                    self.link(node, head);
                }
                shard.len.fetch_add(1, Ordering::Relaxed);
                1
            }
        }
    }

    /// Unlinks `node` from its ring and zeroes it.
    ///
    /// # Safety
    ///
    /// `node` is on `shard`'s ring and the caller holds its lock.
    unsafe fn unlink(&self, shard: &Shard, node: *mut SaLruNode) {
        // SAFETY: caller promise.
        let nd = unsafe { &*node };
        let (p, n) = (ptr_of(nd.prev.load(Ordering::Relaxed)), ptr_of(nd.next.load(Ordering::Relaxed)));
        // SAFETY: the neighbours of a ring member are live; lock held.
        unsafe { self.link(p, n) };
        nd.prev.store(0, Ordering::Relaxed);
        nd.next.store(0, Ordering::Relaxed);
        shard.len.fetch_sub(1, Ordering::Relaxed);
    }

    /// # Safety
    ///
    /// `node` is valid.
    unsafe fn del(&self, node: *mut SaLruNode) -> c_int {
        self.check_not_isolating(b"sa_lru_del called from isolate (would deadlock):", node);
        let shard = self.shard_of(node);
        let _g = lock(&shard.lock);
        // SAFETY: caller promise; we hold the shard lock.
        match unsafe { self.membership(node, b"sa_lru_del of a node whose links are corrupt:") } {
            None => {
                set_errno(libc::EBUSY);
                -1
            }
            Some(false) => 0,
            Some(true) => {
                // SAFETY: on our ring, in this shard; lock held.
                unsafe { self.unlink(shard, node) };
                1
            }
        }
    }

    /// # Safety
    ///
    /// `node` is valid.
    unsafe fn touch(&self, node: *mut SaLruNode) {
        self.check_not_isolating(b"sa_lru_touch called from isolate (would deadlock):", node);
        let shard = self.shard_of(node);
        let _g = lock(&shard.lock);
        // SAFETY: caller promise; we hold the shard lock.
        if unsafe { self.membership(node, b"sa_lru_touch of a node whose links are corrupt:") } == Some(true) {
            // SAFETY: on our ring, in this shard; lock held.
            unsafe { self.move_to_tail(shard, node) };
        }
    }

    /// # Safety
    ///
    /// `node` is on `shard`'s ring and the caller holds its lock.
    unsafe fn move_to_tail(&self, shard: &Shard, node: *mut SaLruNode) {
        let head = Self::head(shard);
        // SAFETY: caller promise: ring members and the head are live.
        unsafe {
            if ptr_of((*head).prev.load(Ordering::Relaxed)) == node {
                return;
            }
            self.unlink(shard, node);
            let last = ptr_of((*head).prev.load(Ordering::Relaxed));
            self.link(last, node);
            self.link(node, head);
        }
        shard.len.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> usize {
        // Relaxed: a count is an estimate the moment it is read.
        self.shards.iter().map(|s| s.len.load(Ordering::Relaxed)).sum()
    }

    fn dying(&self) -> bool {
        self.state.load(Ordering::Acquire) & DYING != 0
    }

    /// Walks up to `nr` nodes, cold end first, in proportion across shards;
    /// returns the nodes disposed and whether `isolate` said stop.
    fn walk(self: &Arc<Self>, nr: usize) -> (usize, bool) {
        // Acquire pairs with destroy's AcqRel fetch_or: a walk that enters
        // before DYING is counted and waited for; one after sees DYING.
        if self.state.fetch_add(1, Ordering::Acquire) & DYING != 0 {
            self.state.fetch_sub(1, Ordering::Release);
            return (0, false);
        }
        let frame = Frame { inner: Arc::as_ptr(self), locked: Cell::new(false), prev: top_frame() };
        set_top_frame(&frame);
        let total = self.count();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let (mut disposed, mut walked, mut stopped) = (0, 0, false);
        for i in 0..SHARDS {
            let shard = &self.shards[(start + i) % SHARDS];
            let len = shard.len.load(Ordering::Relaxed);
            if len == 0 || total == 0 {
                continue;
            }
            // Rounded up, so that small shards are not starved, and capped
            // by what is left, so that the walk never looks at more than asked.
            let share = if nr >= total { len } else { (nr as u128 * len as u128).div_ceil(total as u128) as usize };
            let (d, w, stop) = self.walk_shard(shard, share.min(nr - walked), &frame);
            disposed += d;
            walked += w;
            if stop || self.dying() || walked >= nr {
                stopped = stop;
                break;
            }
        }
        set_top_frame(frame.prev);
        // Release: our callbacks happen-before destroy sees the count drop.
        self.state.fetch_sub(1, Ordering::Release);
        (disposed, stopped)
    }

    /// Offers up to `quota` nodes of `shard` to `isolate` under its lock,
    /// then disposes the removed ones with the lock released; returns the
    /// nodes disposed and walked, and whether isolate said stop.
    fn walk_shard(&self, shard: &Shard, quota: usize, frame: &Frame) -> (usize, usize, bool) {
        let mut removed: *mut SaLruNode = ptr::null_mut();
        let (mut stop, mut walked) = (false, 0);
        {
            let _g = lock(&shard.lock);
            frame.locked.set(true);
            let head = Self::head(shard);
            // SAFETY: the head is live; its link is a ring member or itself.
            let mut cur = ptr_of(unsafe { (*head).next.load(Ordering::Relaxed) });
            while walked < quota && cur != head && !self.dying() {
                walked += 1;
                // SAFETY: `cur` is a ring member (lock held); the caller
                // keeps it alive while it is on the lru.
                let next = ptr_of(unsafe { (*cur).next.load(Ordering::Relaxed) });
                // SAFETY: the header's contract for `isolate`; `cur` is a
                // node the caller added.
                let verdict = unsafe { (self.isolate)(cur, self.arg) };
                match verdict {
                    REMOVED => {
                        // SAFETY: `cur` is still on this ring (isolate may not
                        // touch this lru) and we hold the lock.
                        unsafe { self.unlink(shard, cur) };
                        // SAFETY: `cur` is off the ring and ours until disposed.
                        unsafe { (*cur).next.store(removed as usize, Ordering::Relaxed) };
                        removed = cur;
                    }
                    // SAFETY: as for REMOVED.
                    ROTATE => unsafe { self.move_to_tail(shard, cur) },
                    SKIP => {}
                    STOP => {
                        stop = true;
                        break;
                    }
                    _ => self.report_bad_verdict(cur),
                }
                cur = next;
            }
            frame.locked.set(false);
        }
        (self.dispose_list(removed), walked, stop)
    }

    /// Calls `dispose` on each node of the local list, zeroed first.
    fn dispose_list(&self, mut node: *mut SaLruNode) -> usize {
        let mut n = 0;
        while !node.is_null() {
            // SAFETY: nodes on the local list were removed by this walk and
            // are not freed before `dispose`.
            let next = unsafe { (*node).next.swap(0, Ordering::Relaxed) } as *mut SaLruNode;
            // SAFETY: the header's contract for `dispose`.
            unsafe { (self.dispose)(node, self.arg) };
            n += 1;
            node = next;
        }
        n
    }

    /// An `isolate` result outside the enum: the node is left in place (as
    /// `SA_LRU_SKIP`) and the first such result of this lru is reported.
    #[cold]
    fn report_bad_verdict(&self, node: *const SaLruNode) {
        if !self.bad_verdict.swap(true, Ordering::Relaxed) {
            let what =
                b"isolate returned a value outside enum sa_lru_verdict (left as SA_LRU_SKIP; said once) for node";
            report(&self.name, what, node);
        }
    }

    /// How many walks of this lru are in progress on the calling thread.
    fn walks_on_this_thread(&self) -> usize {
        let (mut f, mut n) = (top_frame(), 0);
        while !f.is_null() {
            // SAFETY: as in `check_not_isolating`.
            let fr = unsafe { &*f };
            n += usize::from(ptr::eq(fr.inner, self));
            f = fr.prev;
        }
        n
    }
}

/// Writes `shrinkalloc: sa_lru 'NAME': WHAT 0xNODE` to stderr without
/// allocating.
fn report(name: &[u8], what: &[u8], node: *const SaLruNode) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let name = &name[..name.len().min(64)];
    for part in [b"shrinkalloc: sa_lru '".as_slice(), name, b"': ", &what[..what.len().min(150)], b" 0x"] {
        let part = &part[..part.len().min(buf.len() - n - 17)];
        buf[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    for i in (0..16).rev() {
        buf[n] = b"0123456789abcdef"[(node as usize >> (i * 4)) & 0xf];
        n += 1;
    }
    buf[n] = b'\n';
    // SAFETY: `buf[..=n]` is initialised; a failed write changes nothing here.
    unsafe { libc::write(2, buf.as_ptr().cast(), n + 1) };
}

/// The lru's shrinker: count is the nodes on the list, scan a walk.
struct LruShrinker(Arc<Inner>);

impl Shrinker for LruShrinker {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        match self.0.count() {
            0 => CountResult::Empty,
            n => CountResult::Count(n),
        }
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        match self.0.walk(sc.nr_to_scan()) {
            (0, true) => ScanResult::Stop,
            (n, _) => ScanResult::Freed(n),
        }
    }
}

fn new_inner(ops: &SaLruOps, isolate: Isolate, dispose: Dispose, name: &[u8]) -> Arc<Inner> {
    let shard = || Shard { lock: Mutex::new(()), head: SaLruNode { prev: 0.into(), next: 0.into() }, len: 0.into() };
    let inner = Arc::new(Inner {
        shards: core::array::from_fn(|_| shard()),
        tag: claim_tag(),
        isolate,
        dispose,
        arg: ops.arg,
        name: name.into(),
        state: AtomicUsize::new(0),
        cursor: AtomicUsize::new(0),
        bad_verdict: AtomicBool::new(false),
    });
    for s in &inner.shards {
        let head = Inner::head(s);
        // SAFETY: the head lives in the Arc (it never moves) and nobody
        // else sees it yet.
        unsafe { inner.link(head, head) };
    }
    inner
}

/// Creates an lru and registers its shrinker; null with `errno = EINVAL`
/// on bad `ops`.
///
/// # Safety
///
/// `ops` is null or points to a valid `struct sa_lru_ops` whose `name` is
/// null or NUL-terminated; its callbacks honour the header's contract for
/// as long as the lru lives.
#[no_mangle]
pub unsafe extern "C" fn sa_lru_create(ops: *const SaLruOps) -> *mut SaLru {
    // SAFETY: caller promise: `ops` is null or valid for reads.
    let Some(ops) = (unsafe { ops.as_ref() }) else { return einval() };
    let (Some(isolate), Some(dispose)) = (ops.isolate, ops.dispose) else { return einval() };
    let Some((needs, seeks)) = crate::shrinker::needs_and_seeks(ops.needs, ops.seeks) else { return einval() };
    reclaim::with_reserve(|| {
        let name: &[u8] = if ops.name.is_null() {
            b"sa_lru"
        } else {
            // SAFETY: caller promise: a non-null name is NUL-terminated.
            unsafe { CStr::from_ptr(ops.name) }.to_bytes()
        };
        let inner = new_inner(ops, isolate, dispose, name);
        let options = ShrinkerOptions::new(String::from_utf8_lossy(name)).needs(needs).seeks(seeks);
        let shrinker = reclaim::register(LruShrinker(inner.clone()), options);
        Box::into_raw(Box::new(SaLru { inner, shrinker: Some(shrinker) }))
    })
}

/// Unregisters the lru's shrinker, waits for walks on other threads, and
/// frees the lru; the nodes still on it are left as they are.
///
/// # Safety
///
/// `lru` is null or a live handle from `sa_lru_create`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn sa_lru_destroy(lru: *mut SaLru) {
    if lru.is_null() {
        return;
    }
    // SAFETY: caller promise: the leaked box of a live handle, taken once.
    let mut lru = unsafe { Box::from_raw(lru) };
    // AcqRel pairs with `walk`'s Acquire fetch_add (see there).
    lru.inner.state.fetch_or(DYING, Ordering::AcqRel);
    drop(lru.shrinker.take());
    let mine = lru.inner.walks_on_this_thread();
    let mut waited = 0u32;
    // Acquire pairs with `walk`'s Release: their callbacks are over.
    while lru.inner.state.load(Ordering::Acquire) & !DYING > mine {
        waited += 1;
        if waited < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Adds `node` at the hot end: 1, 0 if it was on already, -1 with `EBUSY`
/// if it is on another lru, -1 with `EINVAL` on null arguments.
///
/// # Safety
///
/// `lru` is a live handle; `node` is valid and was zeroed before its first
/// add (and stays allocated while on the lru).
#[no_mangle]
pub unsafe extern "C" fn sa_lru_add(lru: *mut SaLru, node: *mut SaLruNode) -> c_int {
    // SAFETY: caller promise: null or live.
    match unsafe { lru.as_ref() } {
        // SAFETY: caller promise on `node`.
        Some(l) if !node.is_null() => unsafe { l.inner.add(node) },
        _ => einval_int(),
    }
}

/// Removes `node`: 1, 0 if it was not on, -1 with `EBUSY` if it is on
/// another lru, -1 with `EINVAL` on null arguments.
///
/// # Safety
///
/// As for `sa_lru_add`.
#[no_mangle]
pub unsafe extern "C" fn sa_lru_del(lru: *mut SaLru, node: *mut SaLruNode) -> c_int {
    // SAFETY: caller promise: null or live.
    match unsafe { lru.as_ref() } {
        // SAFETY: caller promise on `node`.
        Some(l) if !node.is_null() => unsafe { l.inner.del(node) },
        _ => einval_int(),
    }
}

/// Moves `node` to the hot end if it is on this lru.
///
/// # Safety
///
/// As for `sa_lru_add`.
#[no_mangle]
pub unsafe extern "C" fn sa_lru_touch(lru: *mut SaLru, node: *mut SaLruNode) {
    // SAFETY: caller promise: null or live.
    if let Some(l) = unsafe { lru.as_ref() } {
        if !node.is_null() {
            // SAFETY: caller promise on `node`.
            unsafe { l.inner.touch(node) };
        }
    }
}

/// Nodes on the lru (0 for null).
///
/// # Safety
///
/// `lru` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn sa_lru_count(lru: *const SaLru) -> usize {
    // SAFETY: caller promise: null or live.
    unsafe { lru.as_ref() }.map_or(0, |l| l.inner.count())
}

/// Walks up to `nr_to_walk` nodes now; returns how many were disposed.
///
/// # Safety
///
/// `lru` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn sa_lru_shrink(lru: *mut SaLru, nr_to_walk: usize) -> usize {
    // SAFETY: caller promise: null or live.
    let Some(l) = (unsafe { lru.as_ref() }) else { return 0 };
    l.inner.check_not_isolating(b"sa_lru_shrink called from isolate (would deadlock):", ptr::null());
    // The walk holds its own reference: `dispose` may destroy the lru.
    let inner = l.inner.clone();
    inner.walk(nr_to_walk).0
}

fn einval() -> *mut SaLru {
    set_errno(libc::EINVAL);
    ptr::null_mut()
}

fn einval_int() -> c_int {
    set_errno(libc::EINVAL);
    -1
}

#[cfg(test)]
mod tests {
    //! The list itself, without a C compiler: hot nodes rotated, cold ones
    //! removed and disposed zeroed, a node on another lru refused. (Miri
    //! cannot run this crate: it exports `malloc`.)
    use super::*;

    #[repr(C)]
    struct Obj {
        node: SaLruNode,
        key: usize,
        hot: bool,
    }

    unsafe extern "C" fn isolate_cold(node: *mut SaLruNode, _: *mut c_void) -> c_int {
        // SAFETY: every node here is the first field of a live `Obj`.
        if unsafe { (*node.cast::<Obj>()).hot } {
            ROTATE
        } else {
            REMOVED
        }
    }

    unsafe extern "C" fn dispose_count(node: *mut SaLruNode, arg: *mut c_void) {
        // SAFETY: `arg` is the test's counter; `node` was zeroed by the walk.
        unsafe {
            assert_eq!((*node).next.load(Ordering::Relaxed), 0);
            *arg.cast::<usize>() += 1;
        }
    }

    fn make(arg: *mut usize) -> *mut SaLru {
        let ops = SaLruOps {
            name: c"unit".as_ptr(),
            isolate: Some(isolate_cold),
            dispose: Some(dispose_count),
            arg: arg.cast(),
            needs: 0,
            seeks: 0,
        };
        // SAFETY: `ops` is valid; the callbacks keep the contract.
        unsafe { sa_lru_create(&ops) }
    }

    #[test]
    fn walk_removes_cold_nodes_rotates_hot_ones_and_refuses_another_lrus_node() {
        let mut disposed = 0usize;
        let (a, b) = (make(&mut disposed), make(&mut disposed));
        let mut objs: Vec<Obj> = (0..40)
            .map(|key| Obj { node: SaLruNode { prev: 0.into(), next: 0.into() }, key, hot: key % 4 == 0 })
            .collect();
        // SAFETY: live handles; the nodes live (and do not move) until the end.
        unsafe {
            for o in objs.iter_mut() {
                assert_eq!(sa_lru_add(a, &mut o.node), 1);
            }
            assert_eq!(sa_lru_add(a, &mut objs[0].node), 0);
            assert_eq!(sa_lru_add(b, &mut objs[1].node), -1, "on another lru");
            assert_eq!(sa_lru_del(b, &mut objs[1].node), -1);
            assert_eq!(sa_lru_count(a), 40);
            assert_eq!(sa_lru_shrink(a, usize::MAX), 30);
            assert_eq!(disposed, 30);
            assert_eq!(sa_lru_count(a), 10);
            for o in objs.iter_mut() {
                let on = o.node.next.load(Ordering::Relaxed) != 0;
                assert_eq!(on, o.hot, "key {}", o.key);
                if on {
                    assert_eq!(sa_lru_del(a, &mut o.node), 1);
                }
            }
            assert_eq!(sa_lru_count(a), 0);
            sa_lru_destroy(a);
            sa_lru_destroy(b);
        }
    }
}
