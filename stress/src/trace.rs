//! The key trace of a cache scenario: every request the child made of its
//! cache, in the order the cache saw them, for the oracle (`oracle.rs`).
//!
//! A record is 16 bytes, little-endian: the request's sequence number
//! (`u64`, from one counter per child, taken while the cache holds the
//! key's lock, so that a hit is always numbered after the put it found), the
//! key (`u32`), and a word holding the block size as allocated (low 24 bits)
//! and the [`Kind`] (high 8 bits). The C daemon of `cache-c`
//! (`stress/cached/`) writes the same records.
//!
//! The child writes its records to a pipe the harness gives it (the fd in
//! [`FD_ENV`]): the harness, outside the cgroup, stores them in
//! `trace-<allocator>.bin` next to the results ([`Tracer`]), so that the trace costs the
//! measured group no page cache. Each thread fills a buffer of at most
//! `PIPE_BUF` bytes and writes it whole, which a pipe never interleaves with
//! another thread's write. Invariant: a trace file holds whole records;
//! records of one child are unique by sequence number, and sorted by it they
//! are the cache's order.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

/// The variable that tells a child which fd to write its trace to.
pub const FD_ENV: &str = "SHRINKALLOC_STRESS_TRACE_FD";
/// Bytes per record.
pub const RECORD: usize = 16;
/// Bytes a thread buffers before writing: `PIPE_BUF`, so that one write is atomic.
const BUFFER: usize = 4096;
const SIZE_MASK: u32 = (1 << 24) - 1;

/// What a record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A lookup that found the key.
    Hit = 1,
    /// A lookup that did not.
    Miss = 2,
    /// The key was inserted (or replaced) with a block of this size.
    Put = 3,
}

/// One request, as traced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its place in the cache's order.
    pub seq: u64,
    /// The key.
    pub key: u32,
    /// The block size as allocated, in bytes.
    pub size: u32,
    /// What happened.
    pub kind: Kind,
}

impl Record {
    /// The record's 16 bytes.
    pub fn encode(&self) -> [u8; RECORD] {
        let mut b = [0; RECORD];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.key.to_le_bytes());
        b[12..].copy_from_slice(&((self.size & SIZE_MASK) | (self.kind as u32) << 24).to_le_bytes());
        b
    }

    /// The record in `b`; `None` for an unknown kind.
    pub fn decode(b: &[u8; RECORD]) -> Option<Record> {
        let word = |r: std::ops::Range<usize>| b[r].iter().rev().fold(0u64, |a, &x| a << 8 | u64::from(x));
        let last = word(12..16) as u32;
        let kind = match last >> 24 {
            1 => Kind::Hit,
            2 => Kind::Miss,
            3 => Kind::Put,
            _ => return None,
        };
        Some(Record { seq: word(0..8), key: word(8..12) as u32, size: last & SIZE_MASK, kind })
    }
}

/// Every whole record of a trace file's bytes, sorted into the cache's
/// order; `Err` names the first record that does not decode.
pub fn parse(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut records = Vec::with_capacity(bytes.len() / RECORD);
    for (i, chunk) in bytes.chunks_exact(RECORD).enumerate() {
        let chunk: &[u8; RECORD] = chunk.try_into().expect("chunks_exact gives whole records");
        records.push(Record::decode(chunk).ok_or_else(|| format!("record {i} has an unknown kind"))?);
    }
    records.sort_unstable_by_key(|r| r.seq);
    Ok(records)
}

/// A child's side of the trace: the fd and the sequence counter.
pub struct Trace {
    fd: Option<RawFd>,
    seq: AtomicU64,
}

impl Trace {
    /// The trace the harness asked for in [`FD_ENV`], or one that records
    /// nothing.
    pub fn from_env() -> Trace {
        let fd = std::env::var(FD_ENV).ok().and_then(|v| v.parse().ok()).filter(|&fd: &RawFd| fd >= 0);
        Trace { fd, seq: AtomicU64::new(0) }
    }

    /// A trace that records nothing.
    pub fn off() -> Trace {
        Trace { fd: None, seq: AtomicU64::new(0) }
    }

    /// The next sequence number. Take it while holding the lock that orders
    /// the request against the others on its key.
    pub fn next_seq(&self) -> u64 {
        // Relaxed: the lock the caller holds orders the requests on one
        // key, and the RMWs on this counter have one modification order
        // that agrees with it (coherence); nothing else is published.
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A buffer for one thread's records.
    pub fn buffer(&self) -> TraceBuf<'_> {
        TraceBuf { trace: self, buf: Vec::with_capacity(if self.fd.is_some() { BUFFER } else { 0 }) }
    }
}

/// One thread's records not yet written; written when full and on drop.
pub struct TraceBuf<'a> {
    trace: &'a Trace,
    buf: Vec<u8>,
}

impl TraceBuf<'_> {
    /// Adds a record (nothing when the trace is off).
    pub fn push(&mut self, r: Record) {
        if self.trace.fd.is_none() {
            return;
        }
        self.buf.extend_from_slice(&r.encode());
        if self.buf.len() + RECORD > BUFFER {
            self.flush();
        }
    }

    /// Writes the buffered records in one `write`.
    pub fn flush(&mut self) {
        let Some(fd) = self.trace.fd else { return };
        let mut at = 0;
        while at < self.buf.len() {
            // SAFETY: the pointer and length describe initialised bytes of
            // `self.buf`, which outlives the call.
            let n = unsafe { libc::write(fd, self.buf[at..].as_ptr().cast(), self.buf.len() - at) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                break; // The harness is gone: the trace is lost, the run is not.
            }
            at += n as usize;
        }
        self.buf.clear();
    }
}

impl Drop for TraceBuf<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The harness's end of a traced child's trace: a pipe whose write end the
/// child inherits (its number in [`FD_ENV`]) and a thread that copies
/// what comes out of it into the trace file, outside the child's cgroup.
pub struct Tracer {
    write: Option<OwnedFd>,
    copier: thread::JoinHandle<std::io::Result<()>>,
    done: Receiver<()>,
}

impl Tracer {
    /// Makes the pipe and the file, starts the copier, and has `cmd` keep
    /// the write end open across `exec`.
    pub fn start(cmd: &mut Command, path: &Path) -> std::io::Result<Tracer> {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these two fds, owned by nobody else.
        let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut file = File::create(path)?;
        let fd = write.as_raw_fd();
        cmd.env(FD_ENV, fd.to_string());
        // SAFETY: the closure runs in the forked child before `exec` and only
        // calls fcntl (async-signal-safe, no allocation, no lock); `fd` is
        // open there because `write` lives until the spawn has returned.
        unsafe {
            cmd.pre_exec(move || match libc::fcntl(fd, libc::F_SETFD, 0) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        let (tx, done) = mpsc::channel();
        let copier = thread::spawn(move || {
            let mut read = read;
            let r = std::io::copy(&mut read, &mut file).map(drop);
            let _ = tx.send(());
            r
        });
        Ok(Tracer { write: Some(write), copier, done })
    }

    /// Closes the harness's copy of the write end once the child has it.
    pub fn spawned(mut self) -> Tracer {
        self.write = None;
        self
    }

    /// Waits for the copier (the pipe ends when the child and what it
    /// started are gone; a straggler holding it gets 5 s), then reads the
    /// trace file back, in the cache's order.
    pub fn records(self, path: &Path) -> Result<Vec<Record>, String> {
        if self.done.recv_timeout(Duration::from_secs(5)).is_err() {
            return Err("the trace pipe was still open 5 s after the child ended".into());
        }
        match self.copier.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("cannot write {}: {e}", path.display())),
            Err(_) => return Err("the trace copier panicked".into()),
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let records = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if records.is_empty() {
            return Err("the child traced nothing".into());
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_sort_by_sequence() {
        let a = Record { seq: 7, key: 0xdead_beef, size: 32 << 10, kind: Kind::Put };
        let b = Record { seq: 3, key: 1, size: 512, kind: Kind::Hit };
        assert_eq!(Record::decode(&a.encode()), Some(a));
        let mut bytes = a.encode().to_vec();
        bytes.extend(b.encode());
        bytes.extend([1, 2, 3]); // a torn record at the end is ignored
        assert_eq!(parse(&bytes), Ok(vec![b, a]));
        let mut bad = b.encode();
        bad[15] = 9;
        assert!(parse(&bad).is_err());
    }
}
