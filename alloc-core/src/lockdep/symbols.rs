//! Names for the frames of a report: `dladdr()` for the symbols an object
//! exports, else the object's own symbol table (`.symtab`, which a Rust
//! binary keeps unless stripped), read from the file mapped read-only.
//!
//! Invariant: nothing here allocates. Mapped files stay mapped (reports
//! are rare, and a file is mapped once); the cache of them is touched only
//! under the report lock (`report::PRINT`), which every caller holds.
//! Every offset read from a file is checked against the mapping's length.
//! Its few system calls (`open`, `fstat`, `mmap`, `close`) stay here rather
//! than in `os.rs`: they serve the report alone, never an allocator path.

use core::ffi::{c_char, CStr};
use core::fmt::Write;

/// Objects whose files were mapped (their path pointer from `dladdr`, the
/// mapping, its length); 0 length: the file could not be read.
struct Mapped {
    name: usize,
    base: usize,
    len: usize,
}

const CACHE: usize = 8;

/// Touched only under `report::PRINT` (see the module invariant).
struct Cache(core::cell::UnsafeCell<[Mapped; CACHE]>);
// SAFETY: accessed only under the report lock.
unsafe impl Sync for Cache {}

static FILES: Cache = Cache(core::cell::UnsafeCell::new([const { Mapped { name: 0, base: 0, len: 0 } }; CACHE]));

fn read<const N: usize>(file: &[u8], at: usize) -> Option<[u8; N]> {
    file.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn u16_at(file: &[u8], at: usize) -> Option<usize> {
    read::<2>(file, at).map(|b| u16::from_le_bytes(b) as usize)
}

fn u32_at(file: &[u8], at: usize) -> Option<usize> {
    read::<4>(file, at).map(|b| u32::from_le_bytes(b) as usize)
}

fn u64_at(file: &[u8], at: usize) -> Option<usize> {
    read::<8>(file, at).and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
}

/// The function symbol of a 64-bit little-endian ELF `file` that holds
/// `vaddr`: its name and `vaddr`'s offset in it.
fn lookup(file: &[u8], vaddr: usize) -> Option<(&[u8], usize)> {
    if file.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (shoff, shentsize, shnum) = (u64_at(file, 40)?, u16_at(file, 58)?, u16_at(file, 60)?);
    let section = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let symtab = (0..shnum).find_map(|i| section(i).filter(|&s| u32_at(file, s + 4) == Some(2)))?;
    let (off, size, link) = (u64_at(file, symtab + 24)?, u64_at(file, symtab + 32)?, u32_at(file, symtab + 40)?);
    let strtab = section(link)?;
    let (str_off, str_size) = (u64_at(file, strtab + 24)?, u64_at(file, strtab + 32)?);
    let strings = file.get(str_off..str_off.checked_add(str_size)?)?;
    for s in (off..off.checked_add(size)?).step_by(24) {
        let (name, info, value, len) =
            (u32_at(file, s)?, *file.get(s + 4)?, u64_at(file, s + 8)?, u64_at(file, s + 16)?);
        if info & 0xf == 2 && value <= vaddr && vaddr < value.saturating_add(len.max(1)) {
            let name = strings.get(name..)?;
            let end = name.iter().position(|&b| b == 0)?;
            return Some((&name[..end], vaddr - value));
        }
    }
    None
}

/// The mapping of the object file named `name` (a path from `dladdr`).
///
/// # Safety
///
/// The caller holds the report lock; `name` is a NUL-terminated string.
unsafe fn mapped(name: *const c_char) -> &'static [u8] {
    // SAFETY: the caller holds the report lock, the cache's only guard.
    let files = unsafe { &mut *FILES.0.get() };
    let slot = match files.iter().position(|m| m.name == name as usize || m.name == 0) {
        Some(i) => i,
        None => return &[],
    };
    let m = &mut files[slot];
    if m.name == 0 {
        m.name = name as usize;
        // SAFETY: `name` is a NUL-terminated path (caller promise).
        let fd = unsafe { libc::open(name, libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: `st` is plain data that fstat fills.
            let mut st: libc::stat = unsafe { core::mem::zeroed() };
            // SAFETY: `fd` is open and `st` writable.
            if unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_size > 0 {
                let len = st.st_size as usize;
                // SAFETY: a fresh read-only private mapping of the file.
                let p = unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0) };
                if p != libc::MAP_FAILED {
                    (m.base, m.len) = (p as usize, len);
                }
            }
            // SAFETY: `fd` was opened above and is not used again.
            unsafe { libc::close(fd) };
        }
    }
    if m.len == 0 {
        return &[];
    }
    // SAFETY: a live read-only mapping of `len` bytes, never unmapped.
    unsafe { core::slice::from_raw_parts(m.base as *const u8, m.len) }
}

/// Writes one frame as glibc's `backtrace_symbols_fd` does,
/// `object(symbol+0x1f) [0x...]`, naming symbols from the object's symbol
/// table where `dladdr` knows none. The caller holds the report lock.
pub(super) fn write_frame(out: &mut impl Write, addr: usize) {
    // SAFETY: `Dl_info` is plain data that dladdr fills.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: `info` is writable; dladdr only reads the address.
    if unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        let _ = writeln!(out, "  [{addr:#x}]");
        return;
    }
    // SAFETY: dladdr sets dli_fname to the object's NUL-terminated path.
    let object = unsafe { CStr::from_ptr(info.dli_fname) }.to_str().unwrap_or("?");
    if !info.dli_sname.is_null() {
        // SAFETY: dladdr sets dli_sname to a NUL-terminated symbol name.
        let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_bytes();
        let _ = write!(out, "  {object}(");
        demangle(out, name);
        let _ = writeln!(out, "+{:#x}) [{addr:#x}]", addr - info.dli_saddr as usize);
        return;
    }
    let rel = addr.wrapping_sub(info.dli_fbase as usize);
    // SAFETY: the caller holds the report lock; dli_fname is NUL-terminated.
    let file = unsafe { mapped(info.dli_fname) };
    // A position-independent object's symbols are offsets from its base; a
    // fixed-address executable's (ELF type 2) are absolute addresses.
    let vaddr = if u16_at(file, 16) == Some(2) { addr } else { rel };
    match lookup(file, vaddr) {
        Some((name, off)) => {
            let _ = write!(out, "  {object}(");
            demangle(out, name);
            let _ = writeln!(out, "+{off:#x}) [{addr:#x}]");
        }
        None => {
            let _ = writeln!(out, "  {object}(+{rel:#x}) [{addr:#x}]");
        }
    }
}

/// Writes a symbol name, decoding Rust's legacy mangling
/// (`_ZN4core3ptr13drop_in_place17h0123456789abcdefE` reads
/// `core::ptr::drop_in_place`); anything else as it is.
fn demangle(out: &mut impl Write, name: &[u8]) {
    let Some(mut rest) = name.strip_prefix(b"_ZN") else {
        let _ = out.write_str(core::str::from_utf8(name).unwrap_or("?"));
        return;
    };
    let mut first = true;
    while let Some(&c) = rest.first() {
        if c == b'E' {
            return;
        }
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let len: usize = core::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse().ok()).unwrap_or(0);
        let Some(part) = rest.get(digits..digits + len).filter(|_| len > 0) else {
            let _ = out.write_str(core::str::from_utf8(name).unwrap_or("?"));
            return;
        };
        rest = &rest[digits + len..];
        let is_hash = part.len() == 17 && part[0] == b'h' && part[1..].iter().all(u8::is_ascii_hexdigit);
        if is_hash && rest.first() == Some(&b'E') {
            return;
        }
        if !first {
            let _ = out.write_str("::");
        }
        first = false;
        write_part(out, part);
    }
}

/// One path segment, with Rust's `$LT$`-style escapes and `..` decoded.
fn write_part(out: &mut impl Write, mut part: &[u8]) {
    const ESCAPES: [(&[u8], &str); 9] = [
        (b"$LT$", "<"),
        (b"$GT$", ">"),
        (b"$RF$", "&"),
        (b"$BP$", "*"),
        (b"$C$", ","),
        (b"$SP$", "@"),
        (b"$u20$", " "),
        (b"$u7b$", "{"),
        (b"$u7d$", "}"),
    ];
    if part.first() == Some(&b'_') && part.get(1) == Some(&b'$') {
        part = &part[1..];
    }
    while !part.is_empty() {
        if let Some((e, s)) = ESCAPES.iter().find(|(e, _)| part.starts_with(e)) {
            let _ = out.write_str(s);
            part = &part[e.len()..];
        } else if part.starts_with(b"..") {
            let _ = out.write_str("::");
            part = &part[2..];
        } else {
            let _ = out.write_char(part[0] as char);
            part = &part[1..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(std::string::String);
    impl Write for S {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0.push_str(s);
            Ok(())
        }
    }

    #[test]
    fn legacy_rust_names_are_demangled() {
        let mut s = S(std::string::String::new());
        demangle(&mut s, b"_ZN4core3ptr13drop_in_place17h0123456789abcdefE");
        assert_eq!(s.0, "core::ptr::drop_in_place");
        s.0.clear();
        demangle(
            &mut s,
            b"_ZN70_$LT$shrinkalloc..sync..Mutex$LT$T$GT$$u20$as$u20$core..fmt..Debug$GT$3fmt17h0123456789abcdefE",
        );
        assert_eq!(s.0, "<shrinkalloc::sync::Mutex<T> as core::fmt::Debug>::fmt");
        s.0.clear();
        demangle(&mut s, b"main");
        assert_eq!(s.0, "main");
    }

    #[test]
    fn this_binary_names_its_own_functions() {
        let _g = super::super::report::PRINT.lock();
        let mut s = S(std::string::String::new());
        write_frame(&mut s, this_binary_names_its_own_functions as *const () as usize + 1);
        assert!(s.0.contains("this_binary_names_its_own_functions+0x1)"), "{}", s.0);
    }
}
