//! A block file mapped read-only into memory (chunk segments and the index), so that a
//! query reads what it needs in place and the kernel keeps the pages in its cache.
//!
//! If another program truncates a mapped file, touching its missing pages raises SIGBUS;
//! Prometheus maps its block files the same way.

use std::fs::File;
use std::io;

/// A file mapped read-only into memory, unmapped on drop.
#[cfg(unix)]
pub(crate) struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned: shared references to its bytes may cross
// threads like those of a `Box<[u8]>`.
#[cfg(unix)]
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing mutates the mapping through `&Mapping`.
#[cfg(unix)]
unsafe impl Sync for Mapping {}

#[cfg(unix)]
impl Mapping {
    /// Maps the first `len` (> 0) bytes of `f`.
    pub(crate) fn of(f: &File, len: u64) -> io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large"))?;
        // SAFETY: a fresh read-only shared mapping of an open file; the kernel picks the
        // address. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// Tells the kernel the pages read so far are not needed soon: they leave this
    /// process's resident set (they stay in the page cache, and a later read maps them
    /// again). For a read-only file mapping the contents do not change.
    pub(crate) fn release_pages(&self) {
        // SAFETY: `ptr`/`len` are this live mapping; MADV_DONTNEED on a read-only shared
        // file mapping only drops page-table entries, and no `&[u8]` of it is invalidated
        // (later reads fault the same file bytes back in).
        unsafe {
            libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_DONTNEED);
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until `drop`, and they are never written
        // through this mapping. (See the SIGBUS caveat on `ChunkReader`.)
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(unix)]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `of`, unmapped only here; no slice
        // of it outlives `self` (they borrow it).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Without `mmap`, the file read into memory.
#[cfg(not(unix))]
pub(crate) struct Mapping(Vec<u8>);

#[cfg(not(unix))]
impl Mapping {
    pub(crate) fn of(f: &File, len: u64) -> io::Result<Mapping> {
        use std::io::Read;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut buf)?;
        Ok(Mapping(buf))
    }

    /// Nothing to give back: the bytes are the heap's.
    pub(crate) fn release_pages(&self) {}

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}
