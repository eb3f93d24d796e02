//! Every system call the allocator makes, and nothing else.
//!
//! The rest of the crate reaches the kernel only through these functions, so
//! that the policy code stays readable and a port touches one file. None of
//! them allocates from the global allocator, so they are safe to call from
//! inside `malloc`.

use core::ptr::{self, NonNull};

/// The OS page size this crate assumes (x86-64 and aarch64 Linux with 4 KiB pages).
pub const OS_PAGE: usize = 4096;

/// Maps `size` bytes of fresh, zeroed, read-write anonymous memory aligned to
/// `align` (a power of two, at least [`OS_PAGE`]). `None` when the kernel refuses.
///
/// Over-maps by `align` and trims both ends, so the result costs no more than
/// `size` bytes of address space once it returns.
#[cfg(not(miri))]
pub fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && align >= OS_PAGE && size % OS_PAGE == 0);
    let total = size.checked_add(align)?;
    let raw = map(total)?.as_ptr() as usize;
    let start = (raw + align - 1) & !(align - 1);
    let end = start + size;
    if start > raw {
        unmap(raw as *mut u8, start - raw);
    }
    if raw + total > end {
        unmap(end as *mut u8, raw + total - end);
    }
    NonNull::new(start as *mut u8)
}

/// Under Miri, which can only unmap whole mappings: over-maps by `align`
/// and keeps the slack mapped (never unmapped; see [`unmap`]).
#[cfg(miri)]
pub fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && align >= OS_PAGE && size % OS_PAGE == 0);
    let raw = map(size.checked_add(align)?)?.as_ptr();
    let pad = raw.align_offset(align);
    NonNull::new(raw.wrapping_add(pad))
}

/// Private anonymous memory, without swap reservation (Miri takes no
/// other flags).
const MAP_FLAGS: libc::c_int = if cfg!(miri) {
    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
} else {
    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE
};

fn map(size: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing cannot alias any memory the program already uses.
    let p = unsafe { libc::mmap(ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, MAP_FLAGS, -1, 0) };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Unmaps a range previously returned (whole or in part) by [`map_aligned`].
#[cfg(not(miri))]
pub fn unmap(p: *mut u8, size: usize) {
    // SAFETY: callers pass a range this module mapped and that no live block
    // still uses; munmap of such a range cannot affect other memory.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    debug_assert_eq!(rc, 0, "munmap failed");
}

/// Under Miri the mapping stays, unused (its unmap takes only whole
/// mappings, and the tests that run there are short); its addresses are
/// never handed out again, since Miri's `mmap` does not reuse them.
#[cfg(miri)]
pub fn unmap(_p: *mut u8, _size: usize) {}

/// Gives the physical pages of `[p, p + size)` back to the kernel, keeping the
/// address range mapped; the next touch faults in zeroed pages.
#[cfg(not(miri))]
pub fn purge(p: *mut u8, size: usize) {
    debug_assert!(p as usize % OS_PAGE == 0 && size % OS_PAGE == 0);
    // SAFETY: the range lies inside one of our mappings and holds no live
    // block (callers own it in a free state), so dropping its contents is sound.
    let rc = unsafe { libc::madvise(p.cast(), size, libc::MADV_DONTNEED) };
    debug_assert_eq!(rc, 0, "madvise failed");
}

/// Under Miri, which has no `madvise`: zeroes the range, which is what the
/// next touch after `MADV_DONTNEED` reads.
#[cfg(miri)]
pub fn purge(p: *mut u8, size: usize) {
    // SAFETY: the range lies inside one of our mappings and holds no live
    // block (callers own it in a free state).
    unsafe { ptr::write_bytes(p, 0, size) };
}

/// CPUs this process may run on (its affinity mask), read once; 1 when the
/// kernel will not say (and under Miri).
pub fn cpus() -> usize {
    use core::sync::atomic::{AtomicUsize, Ordering};
    static CPUS: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: every thread computes the same value.
    let known = CPUS.load(Ordering::Relaxed);
    if known != 0 {
        return known;
    }
    let n = if cfg!(miri) {
        1
    } else {
        // SAFETY: an all-zero `cpu_set_t` is a valid (empty) set.
        let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
        // SAFETY: the kernel writes at most `size_of::<cpu_set_t>()` bytes
        // into `set`, a local of that size.
        let ok = unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
        if ok {
            // SAFETY: `set` is an initialized set the kernel filled.
            unsafe { libc::CPU_COUNT(&set) as usize }
        } else {
            1
        }
    };
    let n = n.max(1);
    CPUS.store(n, Ordering::Relaxed);
    n
}

/// Milliseconds on a monotonic clock that is cheap to read (vDSO, coarse).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The value of environment variable `name` (NUL-terminated), without allocating.
pub fn getenv(name: &'static [u8]) -> Option<&'static [u8]> {
    debug_assert_eq!(name.last(), Some(&0));
    // SAFETY: `name` is NUL-terminated; getenv returns either NULL or a
    // pointer into the environment block, which lives as long as the process
    // unless the program calls setenv on that variable (documented caveat).
    let v = unsafe { libc::getenv(name.as_ptr().cast()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: a non-NULL getenv result is a NUL-terminated C string.
    Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
}

/// [`getenv`] for a name without its NUL (at most 63 bytes), without
/// allocating.
pub fn getenv_str(name: &str) -> Option<&'static [u8]> {
    let mut buf = [0u8; 64];
    let len = name.len().min(buf.len() - 1);
    buf[..len].copy_from_slice(&name.as_bytes()[..len]);
    // SAFETY: `buf` is NUL-terminated (its last byte at least is 0) and
    // lives across the call; getenv does not keep the name.
    let v = unsafe { libc::getenv(buf.as_ptr().cast()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: a non-NULL getenv result is a NUL-terminated C string.
    Some(unsafe { core::ffi::CStr::from_ptr(v) }.to_bytes())
}

/// Calls `f` with the name of every variable in the environment, without
/// allocating.
pub fn for_each_env_name(mut f: impl FnMut(&[u8])) {
    extern "C" {
        static environ: *const *const core::ffi::c_char;
    }
    // SAFETY: `environ` is libc's NULL-terminated array of NUL-terminated
    // `NAME=value` strings, valid while nobody calls setenv/putenv
    // concurrently (the same caveat as getenv).
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = core::ffi::CStr::from_ptr(*entry).to_bytes();
            let name_len = text.iter().position(|&b| b == b'=').unwrap_or(text.len());
            f(&text[..name_len]);
            entry = entry.add(1);
        }
    }
}

/// Writes `msg` to standard error with one system call, without allocating.
pub fn write_stderr(msg: &[u8]) {
    // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Terminates the process at once: used after reporting a corrupted heap,
/// where unwinding or running destructors could only do more harm.
pub fn abort() -> ! {
    // SAFETY: abort takes no arguments and never returns.
    unsafe { libc::abort() }
}

/// A pthread key whose destructor runs `dtor(value)` when a thread with a
/// non-null value exits. Returns `None` when the process is out of keys.
pub fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer and `dtor` is a valid function.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(dtor)) };
    (rc == 0).then_some(key)
}

/// Sets the calling thread's value for `key`.
pub fn thread_key_set(key: libc::pthread_key_t, value: *mut u8) {
    // SAFETY: `key` came from `thread_key_create`; any pointer value is allowed.
    unsafe { libc::pthread_setspecific(key, value.cast()) };
}

/// Registers handlers that run around `fork()`.
pub fn at_fork(prepare: unsafe extern "C" fn(), parent: unsafe extern "C" fn(), child: unsafe extern "C" fn()) {
    // SAFETY: the handlers are valid functions for the life of the process.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Resident set size of the whole process in bytes, from `/proc/self/statm`,
/// read without allocating. `None` if the file cannot be read.
pub fn resident_bytes() -> Option<usize> {
    let mut buf = [0u8; 128];
    let n = read_file(b"/proc/self/statm\0", &mut buf)?;
    let field = buf[..n].split(|&b| b == b' ').nth(1)?;
    let pages =
        field.iter().try_fold(0usize, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0')))?;
    Some(pages * OS_PAGE)
}

/// Reads up to `buf.len()` bytes of the file at `path` (NUL-terminated)
/// without allocating. Returns the bytes read, or `None` if it cannot be
/// opened or read.
pub fn read_file(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    if path.last() != Some(&0) {
        return None;
    }
    // SAFETY: `path` is NUL-terminated; the fd is closed below.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut total = 0;
    while total < buf.len() {
        // SAFETY: the destination is the unread tail of `buf`.
        let n = unsafe { libc::read(fd, buf[total..].as_mut_ptr().cast(), buf.len() - total) };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => {
                total = usize::MAX;
                break;
            }
        }
    }
    // SAFETY: `fd` is open and ours.
    unsafe { libc::close(fd) };
    (total != usize::MAX).then_some(total)
}

/// Starts a detached thread running `entry(arg)` with a raw pthread (no std
/// set-up that could allocate before `entry` runs). Returns whether it started.
///
/// # Safety
///
/// `arg` stays valid for as long as `entry` may use it.
pub unsafe fn spawn_detached(
    entry: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: *mut libc::c_void,
) -> bool {
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut tid: libc::pthread_t = 0;
    // SAFETY: `attr` is initialised by pthread_attr_init before any other use
    // and destroyed once; `entry` is a valid thread entry; the caller keeps
    // `arg` alive.
    unsafe {
        if libc::pthread_attr_init(attr.as_mut_ptr()) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(attr.as_mut_ptr(), libc::PTHREAD_CREATE_DETACHED);
        let rc = libc::pthread_create(&mut tid, attr.as_ptr(), entry, arg);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        rc == 0
    }
}

/// Names the calling thread as `top -H` shows it (at most 15 bytes).
pub fn set_thread_name(name: &core::ffi::CStr) {
    // SAFETY: `name` is NUL-terminated; the kernel truncates nothing it needs.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
}

/// `PR_SET_IO_FLUSHER` from `<linux/prctl.h>` (Linux 5.6).
const PR_SET_IO_FLUSHER: libc::c_int = 57;

/// Asks the kernel to treat the calling thread as an I/O flusher
/// (`PF_MEMALLOC_NOIO | PF_LOCAL_THROTTLE`, inherited by threads it creates).
/// Needs CAP_SYS_RESOURCE; `Err(errno)` when refused.
pub fn set_io_flusher(on: bool) -> Result<(), i32> {
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_SET_IO_FLUSHER takes one integer argument and requires the
    // unused ones to be zero; no memory is passed to the kernel.
    let rc = unsafe { libc::prctl(PR_SET_IO_FLUSHER, libc::c_ulong::from(on), zero, zero, zero) };
    if rc == 0 {
        return Ok(());
    }
    Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EPERM))
}

/// Turns transparent huge pages off for the whole process
/// (`PR_SET_THP_DISABLE`, Linux 3.15): no fault of its anonymous memory
/// takes a 2 MiB page any more, and khugepaged leaves its mappings alone.
/// Inherited by `fork()` children and kept across `execve()`, as the
/// kernel defines it. `Err(errno)` when refused.
pub fn disable_thp() -> Result<(), i32> {
    let (on, zero): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and requires the
    // unused ones to be zero; no memory is passed to the kernel.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, zero, zero, zero) };
    if rc == 0 {
        return Ok(());
    }
    Err(errno())
}

/// The calling thread's `errno`, as the last failed system call left it.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `Err(errno)` for a negative system-call result, else the result.
fn check(rc: libc::c_long) -> Result<usize, i32> {
    usize::try_from(rc).map_err(|_| errno())
}

/// Opens `path` (NUL-terminated) with `flags` plus `O_CLOEXEC`; the
/// descriptor, or `Err(errno)`.
pub fn open(path: &[u8], flags: libc::c_int) -> Result<i32, i32> {
    if path.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::open(path.as_ptr().cast(), flags | libc::O_CLOEXEC) };
    check(fd.into()).map(|fd| fd as i32)
}

/// Closes a descriptor this crate opened.
pub fn close(fd: i32) {
    // SAFETY: callers pass a descriptor they own and never use it again.
    unsafe { libc::close(fd) };
}

/// Writes `bytes` to `fd` with one call; the count written, or `Err(errno)`.
pub fn write_fd(fd: i32, bytes: &[u8]) -> Result<usize, i32> {
    // SAFETY: `bytes` is a valid readable buffer of `bytes.len()` bytes.
    check(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) } as libc::c_long)
}

/// Reads into `buf` from `fd` with one call; the count read, or `Err(errno)`.
pub fn read_fd(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    check(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } as libc::c_long)
}

/// Reads into `buf` from offset 0 of `fd` (a control file read afresh
/// through the descriptor that `poll` watches); the count, or `Err(errno)`.
pub fn pread_start(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
    check(unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) } as libc::c_long)
}

/// A new non-blocking, close-on-exec eventfd with a zero counter.
pub fn eventfd() -> Result<i32, i32> {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    check(fd.into()).map(|fd| fd as i32)
}

/// Waits at most `timeout_ms` (`-1`: forever) for events on `fds`; the
/// number of descriptors with events, or `Err(errno)` (`EINTR` included).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, i32> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
    check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }.into())
}

/// What kind of inode a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file (a PSI file is one).
    Regular,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// Anything else.
    Other,
}

/// The kind of inode at `path` (NUL-terminated), or `Err(errno)`.
pub fn file_kind(path: &[u8]) -> Result<FileKind, i32> {
    if path.last() != Some(&0) {
        return Err(libc::EINVAL);
    }
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is NUL-terminated; `st` is a valid out-pointer.
    check(unsafe { libc::stat(path.as_ptr().cast(), st.as_mut_ptr()) }.into())?;
    // SAFETY: stat succeeded, so it filled `st`.
    let mode = unsafe { st.assume_init() }.st_mode & libc::S_IFMT;
    Ok(match mode {
        libc::S_IFREG => FileKind::Regular,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        _ => FileKind::Other,
    })
}

/// A close-on-exec stream socket connected to the Unix socket at `path`
/// (without the NUL), or `Err(errno)`.
pub fn connect_unix(path: &[u8]) -> Result<i32, i32> {
    // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    if path.is_empty() || path.len() >= addr.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &s) in addr.sun_path.iter_mut().zip(path) {
        *d = s as libc::c_char;
    }
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    let fd = check(fd.into())? as i32;
    let len = core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    let rc = unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
    if let Err(e) = check(rc.into()) {
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: i32) {
    // SAFETY: F_GETFL/F_SETFL take and return plain integers.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}
