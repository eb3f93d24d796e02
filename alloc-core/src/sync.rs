//! Locks that tell reclaim lockdep when they are held: [`Mutex`] and
//! [`RwLock`], std's types with std's API, annotated.
//!
//! Each acquisition records the lock as held by the calling thread
//! ([`crate::lockdep::acquired`]), each guard's drop records the release
//! before std's guard unlocks. With the checker off that costs one atomic
//! load per acquisition. Reports name a lock by the name given to
//! [`Mutex::named`] / [`RwLock::named`], or by its type.
//!
//! Invariant: a guard exists exactly while the std guard inside it does,
//! and the annotation's "held" spans at most the same time.
//!
//! ```
//! use shrinkalloc::sync::Mutex;
//! static CACHE: Mutex<Vec<u32>> = Mutex::named("cache", Vec::new());
//! CACHE.lock().unwrap().push(1);
//! assert_eq!(CACHE.lock().unwrap().len(), 1);
//! ```

use core::fmt;
use core::ops::{Deref, DerefMut};
use std::sync::{self as ss, LockResult, PoisonError, TryLockError, TryLockResult};

use crate::lockdep;

fn addr<T: ?Sized>(r: &T) -> *const () {
    core::ptr::from_ref(r).cast()
}

/// Maps a std lock result through `f`, keeping the poison.
fn map<G, H>(r: LockResult<G>, f: impl FnOnce(G) -> H) -> LockResult<H> {
    match r {
        Ok(g) => Ok(f(g)),
        Err(p) => Err(PoisonError::new(f(p.into_inner()))),
    }
}

fn map_try<G, H>(r: TryLockResult<G>, f: impl FnOnce(G) -> H) -> TryLockResult<H> {
    match r {
        Ok(g) => Ok(f(g)),
        Err(TryLockError::Poisoned(p)) => Err(TryLockError::Poisoned(PoisonError::new(f(p.into_inner())))),
        Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
    }
}

/// `std::sync::Mutex`, annotated for reclaim lockdep.
///
/// ```
/// let m = shrinkalloc::sync::Mutex::new(5);
/// *m.lock().unwrap() += 1;
/// assert_eq!(m.into_inner().unwrap(), 6);
/// ```
pub struct Mutex<T: ?Sized> {
    name: Option<&'static str>,
    inner: ss::Mutex<T>,
}

/// The guard of a [`Mutex`]: the lock is held (and recorded so) until it
/// is dropped.
///
/// ```
/// let m = shrinkalloc::sync::Mutex::new(String::new());
/// let mut g: shrinkalloc::sync::MutexGuard<'_, String> = m.lock().unwrap();
/// g.push('x');
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    lock: usize,
    inner: ss::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex; reports name it by its type.
    ///
    /// ```
    /// static M: shrinkalloc::sync::Mutex<u32> = shrinkalloc::sync::Mutex::new(0);
    /// ```
    pub const fn new(value: T) -> Self {
        Mutex { name: None, inner: ss::Mutex::new(value) }
    }

    /// A new unlocked mutex that reports name `name`.
    ///
    /// ```
    /// let m = shrinkalloc::sync::Mutex::named("inode table", 0u32);
    /// assert_eq!(m.name(), "inode table");
    /// ```
    pub const fn named(name: &'static str, value: T) -> Self {
        Mutex { name: Some(name), inner: ss::Mutex::new(value) }
    }

    /// Consumes the mutex and returns its value (as std's).
    ///
    /// ```
    /// assert_eq!(shrinkalloc::sync::Mutex::new(3).into_inner().unwrap(), 3);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// The name reports give this lock.
    ///
    /// ```
    /// let m = shrinkalloc::sync::Mutex::new(0u8);
    /// assert_eq!(m.name(), "shrinkalloc::sync::Mutex<u8>");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name.unwrap_or_else(core::any::type_name::<Self>)
    }

    fn guard<'a>(&'a self, inner: ss::MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        if lockdep::is_enabled() {
            lockdep::acquired(addr(self), Some(self.name()));
        }
        MutexGuard { lock: addr(self) as usize, inner }
    }

    /// Blocks until the lock is taken (as std's), then records it held.
    ///
    /// ```
    /// let m = shrinkalloc::sync::Mutex::new(1);
    /// assert_eq!(*m.lock().unwrap(), 1);
    /// ```
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        map(self.inner.lock(), |g| self.guard(g))
    }

    /// Takes the lock if it is free (as std's), recording it held.
    ///
    /// ```
    /// let m = shrinkalloc::sync::Mutex::new(1);
    /// let g = m.lock().unwrap();
    /// assert!(m.try_lock().is_err());
    /// drop(g);
    /// assert!(m.try_lock().is_ok());
    /// ```
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        map_try(self.inner.try_lock(), |g| self.guard(g))
    }

    /// Whether a holder panicked (as std's).
    ///
    /// ```
    /// assert!(!shrinkalloc::sync::Mutex::new(0).is_poisoned());
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poison (as std's).
    ///
    /// ```
    /// shrinkalloc::sync::Mutex::new(0).clear_poison();
    /// ```
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// The value, through the exclusive borrow (no locking, as std's).
    ///
    /// ```
    /// let mut m = shrinkalloc::sync::Mutex::new(0);
    /// *m.get_mut().unwrap() = 4;
    /// assert_eq!(*m.lock().unwrap(), 4);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Self {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mutex").field("name", &self.name()).field("inner", &&self.inner).finish()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // Before `inner` unlocks: the annotation never outlives the lock.
        if lockdep::is_enabled() {
            lockdep::released(self.lock as *const ());
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// `std::sync::RwLock`, annotated for reclaim lockdep: readers and the
/// writer are all recorded as holding it.
///
/// ```
/// let l = shrinkalloc::sync::RwLock::new(vec![1]);
/// assert_eq!(l.read().unwrap().len(), 1);
/// l.write().unwrap().push(2);
/// assert_eq!(l.into_inner().unwrap(), [1, 2]);
/// ```
pub struct RwLock<T: ?Sized> {
    name: Option<&'static str>,
    inner: ss::RwLock<T>,
}

/// A shared guard of a [`RwLock`].
///
/// ```
/// let l = shrinkalloc::sync::RwLock::new(1);
/// let g: shrinkalloc::sync::RwLockReadGuard<'_, i32> = l.read().unwrap();
/// assert_eq!(*g, 1);
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: usize,
    inner: ss::RwLockReadGuard<'a, T>,
}

/// The exclusive guard of a [`RwLock`].
///
/// ```
/// let l = shrinkalloc::sync::RwLock::new(1);
/// let mut g: shrinkalloc::sync::RwLockWriteGuard<'_, i32> = l.write().unwrap();
/// *g = 2;
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: usize,
    inner: ss::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A new unlocked lock; reports name it by its type.
    ///
    /// ```
    /// static L: shrinkalloc::sync::RwLock<u32> = shrinkalloc::sync::RwLock::new(0);
    /// ```
    pub const fn new(value: T) -> Self {
        RwLock { name: None, inner: ss::RwLock::new(value) }
    }

    /// A new unlocked lock that reports name `name`.
    ///
    /// ```
    /// let l = shrinkalloc::sync::RwLock::named("dentries", 0u32);
    /// assert_eq!(l.name(), "dentries");
    /// ```
    pub const fn named(name: &'static str, value: T) -> Self {
        RwLock { name: Some(name), inner: ss::RwLock::new(value) }
    }

    /// Consumes the lock and returns its value (as std's).
    ///
    /// ```
    /// assert_eq!(shrinkalloc::sync::RwLock::new(3).into_inner().unwrap(), 3);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// The name reports give this lock.
    ///
    /// ```
    /// let l = shrinkalloc::sync::RwLock::new(0u8);
    /// assert_eq!(l.name(), "shrinkalloc::sync::RwLock<u8>");
    /// ```
    pub fn name(&self) -> &'static str {
        self.name.unwrap_or_else(core::any::type_name::<Self>)
    }

    fn held(&self) -> usize {
        if lockdep::is_enabled() {
            lockdep::acquired(addr(self), Some(self.name()));
        }
        addr(self) as usize
    }

    /// Blocks until shared access is had (as std's), recording it held.
    ///
    /// ```
    /// let l = shrinkalloc::sync::RwLock::new(1);
    /// let (a, b) = (l.read().unwrap(), l.read().unwrap());
    /// assert_eq!(*a + *b, 2);
    /// ```
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        map(self.inner.read(), |inner| RwLockReadGuard { lock: self.held(), inner })
    }

    /// Shared access if no writer holds the lock (as std's).
    ///
    /// ```
    /// let l = shrinkalloc::sync::RwLock::new(1);
    /// let w = l.write().unwrap();
    /// assert!(l.try_read().is_err());
    /// drop(w);
    /// assert!(l.try_read().is_ok());
    /// ```
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        map_try(self.inner.try_read(), |inner| RwLockReadGuard { lock: self.held(), inner })
    }

    /// Blocks until exclusive access is had (as std's), recording it held.
    ///
    /// ```
    /// let l = shrinkalloc::sync::RwLock::new(1);
    /// *l.write().unwrap() += 1;
    /// assert_eq!(*l.read().unwrap(), 2);
    /// ```
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        map(self.inner.write(), |inner| RwLockWriteGuard { lock: self.held(), inner })
    }

    /// Exclusive access if the lock is free (as std's).
    ///
    /// ```
    /// let l = shrinkalloc::sync::RwLock::new(1);
    /// let r = l.read().unwrap();
    /// assert!(l.try_write().is_err());
    /// drop(r);
    /// assert!(l.try_write().is_ok());
    /// ```
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        map_try(self.inner.try_write(), |inner| RwLockWriteGuard { lock: self.held(), inner })
    }

    /// Whether a writer panicked (as std's).
    ///
    /// ```
    /// assert!(!shrinkalloc::sync::RwLock::new(0).is_poisoned());
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Clears the poison (as std's).
    ///
    /// ```
    /// shrinkalloc::sync::RwLock::new(0).clear_poison();
    /// ```
    pub fn clear_poison(&self) {
        self.inner.clear_poison();
    }

    /// The value, through the exclusive borrow (no locking, as std's).
    ///
    /// ```
    /// let mut l = shrinkalloc::sync::RwLock::new(0);
    /// *l.get_mut().unwrap() = 4;
    /// assert_eq!(*l.read().unwrap(), 4);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        self.inner.get_mut()
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T> From<T> for RwLock<T> {
    fn from(value: T) -> Self {
        RwLock::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RwLock").field("name", &self.name()).field("inner", &&self.inner).finish()
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        if lockdep::is_enabled() {
            lockdep::released(self.lock as *const ());
        }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        if lockdep::is_enabled() {
            lockdep::released(self.lock as *const ());
        }
    }
}
