//! The shrinker functions: `sa_shrinker_register` and
//! `sa_shrinker_unregister`, and the adapter that makes a C
//! `struct sa_shrinker_ops` a Rust `Shrinker`.
//!
//! Invariant: an `sa_shrinker *` handed to C is a leaked
//! `Box<ShrinkerHandle>`; `sa_shrinker_unregister` takes it back exactly
//! once and dropping the handle unregisters (the core's registry waits for
//! callbacks in flight, or defers the drop when called from inside one).
//! The C result sentinels (`SA_SHRINK_STOP`, `SA_SHRINK_EMPTY`) are turned
//! into the core's enums here and nowhere else.

use core::ffi::{c_char, c_uint, c_void, CStr};
use core::ptr;

use shrinkalloc::reclaim::{
    self, CountResult, Level, Needs, ScanResult, ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions,
    DEFAULT_SEEKS,
};

use crate::libc_semantics::set_errno;

/// `SA_SHRINK_STOP`: scan cannot make progress now.
const SA_SHRINK_STOP: usize = usize::MAX;
/// `SA_SHRINK_EMPTY`: count has nothing to free.
const SA_SHRINK_EMPTY: usize = usize::MAX - 1;
/// `SA_NEEDS_FS | SA_NEEDS_IO`.
const NEEDS_BITS: c_uint = 0x3;

/// `struct sa_shrink_control` (layout checked by the header test).
#[repr(C)]
pub struct SaShrinkControl {
    nr_to_scan: usize,
    nr_scanned: usize,
    scope: c_uint,
    level: c_uint,
    target_bytes: usize,
}

type Callback = unsafe extern "C" fn(arg: *mut c_void, sc: *mut SaShrinkControl) -> usize;

/// `struct sa_shrinker_ops`.
#[repr(C)]
pub struct SaShrinkerOps {
    name: *const c_char,
    count: Option<Callback>,
    scan: Option<Callback>,
    arg: *mut c_void,
    needs: c_uint,
    seeks: c_uint,
    batch: usize,
}

/// A C shrinker: its two callbacks and their argument.
struct CShrinker {
    count: Callback,
    scan: Callback,
    arg: *mut c_void,
}

// SAFETY: `sa_shrinker_register`'s contract (in the header) makes the caller
// promise that `count` and `scan` may be called with `arg` from any thread,
// concurrently: the pointer is only ever passed back to them.
unsafe impl Send for CShrinker {}
// SAFETY: as for `Send`.
unsafe impl Sync for CShrinker {}

/// The C view of a control (`nr_scanned` starts at `nr_to_scan`, as the
/// kernel's does; the core does not read it back).
fn control(sc: &ShrinkControl) -> SaShrinkControl {
    let level = match sc.level() {
        Level::None => 0,
        Level::Low => 1,
        Level::Medium => 2,
        Level::Critical => 3,
    };
    SaShrinkControl {
        nr_to_scan: sc.nr_to_scan(),
        nr_scanned: sc.nr_to_scan(),
        scope: sc.scope().bits(),
        level,
        target_bytes: sc.target_bytes(),
    }
}

impl Shrinker for CShrinker {
    fn count(&self, sc: &ShrinkControl) -> CountResult {
        let mut c = control(sc);
        // SAFETY: registration promised `count` is callable with `arg` from
        // this thread; `c` lives across the call.
        match unsafe { (self.count)(self.arg, &mut c) } {
            SA_SHRINK_EMPTY => CountResult::Empty,
            SA_SHRINK_STOP => CountResult::Count(0),
            n => CountResult::Count(n),
        }
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        let mut c = control(sc);
        // SAFETY: as in `count`.
        match unsafe { (self.scan)(self.arg, &mut c) } {
            SA_SHRINK_STOP => ScanResult::Stop,
            SA_SHRINK_EMPTY => ScanResult::Freed(0),
            n => ScanResult::Freed(n),
        }
    }
}

/// The `Needs` of a C `needs` word (`SA_NEEDS_FS | SA_NEEDS_IO`) and the
/// seeks of a C `seeks` (0: the default); `None` when `needs` has other
/// bits. Shared by shrinkers and lrus.
pub(crate) fn needs_and_seeks(needs: c_uint, seeks: c_uint) -> Option<(Needs, c_uint)> {
    if needs & !NEEDS_BITS != 0 {
        return None;
    }
    let needs = match needs {
        0 => Needs::NONE,
        1 => Needs::FS,
        2 => Needs::IO,
        _ => Needs::FS | Needs::IO,
    };
    Some((needs, if seeks == 0 { DEFAULT_SEEKS } else { seeks }))
}

/// Registers a C shrinker; null with `errno = EINVAL` on bad `ops`.
///
/// # Safety
///
/// `ops` is null or points to a valid `struct sa_shrinker_ops` whose `name`
/// is null or a NUL-terminated string; its callbacks honour the header's
/// contract for as long as the shrinker stays registered.
#[no_mangle]
pub unsafe extern "C" fn sa_shrinker_register(ops: *const SaShrinkerOps) -> *mut c_void {
    // SAFETY: caller promise: `ops` is null or valid for reads.
    let Some(ops) = (unsafe { ops.as_ref() }) else { return einval() };
    let (Some(count), Some(scan)) = (ops.count, ops.scan) else { return einval() };
    let Some((needs, seeks)) = needs_and_seeks(ops.needs, ops.seeks) else { return einval() };
    // The name, the options and the handle may use the reserve, as the
    // registration itself does: this works at the hard limit.
    reclaim::with_reserve(|| {
        let name = if ops.name.is_null() {
            "unnamed".into()
        } else {
            // SAFETY: caller promise: a non-null name is NUL-terminated.
            unsafe { CStr::from_ptr(ops.name) }.to_string_lossy().into_owned()
        };
        let options = ShrinkerOptions::new(name).needs(needs).seeks(seeks).batch(ops.batch);
        let handle = reclaim::register(CShrinker { count, scan, arg: ops.arg }, options);
        Box::into_raw(Box::new(handle)).cast()
    })
}

/// Unregisters a shrinker and frees its handle; null does nothing.
///
/// # Safety
///
/// `s` is null or a handle from `sa_shrinker_register` not unregistered
/// since; it is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn sa_shrinker_unregister(s: *mut c_void) {
    if s.is_null() {
        return;
    }
    // SAFETY: caller promise: `s` is the leaked box of a live handle, taken
    // back once; dropping it unregisters.
    drop(unsafe { Box::from_raw(s.cast::<ShrinkerHandle>()) });
}

fn einval() -> *mut c_void {
    set_errno(libc::EINVAL);
    ptr::null_mut()
}
