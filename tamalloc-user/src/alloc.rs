//! The allocator: syscall 554, or its documented `mmap` fallback.
//!
//! # The fallback contract
//!
//! On a kernel without syscall 554, [`alloc`] calls `syscall(554, size)`, sees `ENOSYS`, and
//! the *same thread's very next* `mmap` is
//! `mmap(NULL, PAGE_ALIGN(size), PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0)`.
//! Nothing is allocated between the two calls (no heap allocation may `mmap` in between) and
//! nothing is cached: every allocation tries 554 first. The tracer learns fallback regions
//! from exactly that pair. Size 0 fails with `EINVAL` before any call; a size whose page
//! alignment overflows fails with `ENOMEM` (after the 554 attempt, before any `mmap`).

use std::ptr::NonNull;

use tamalloc_common::{
    abi::{SYS_TAMALLOC, TAMALLOC_MAP_FLAGS, TAMALLOC_PROT},
    trace::page_align,
};

use crate::error::{Error, last_errno};

/// Which call produced a [`Region`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Syscall 554 on a patched kernel: the VMA is named `[anon:tamalloc]`.
    Syscall,
    /// The documented `mmap` fallback on a kernel without 554.
    Fallback,
}

impl Path {
    /// `"syscall"` or `"fallback"`, as printed by the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Syscall => "syscall",
            Self::Fallback => "fallback",
        }
    }
}

/// A tamalloc region: page-aligned, zero-filled on first touch, unmapped on drop.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    path: Path,
}

// SAFETY: a Region owns its mapping exclusively, like a `Box<[u8]>`; nothing in it is tied to
// the thread that created it, and `munmap` may be called from any thread.
unsafe impl Send for Region {}
// SAFETY: shared references only hand out `&[u8]`/`*const u8`; writing needs `&mut Region`.
unsafe impl Sync for Region {}

/// Allocates `len` bytes (rounded up to whole pages) with syscall 554, or with the documented
/// `mmap` fallback when the kernel answers `ENOSYS`.
///
/// Errors keep the kernel's errno: `EINVAL` for `len == 0`, `ENOMEM` when the size overflows
/// or there is no room (address space, `RLIMIT_AS`).
pub fn alloc(len: usize) -> Result<Region, Error> {
    let arg = Some(len as u64);
    if len == 0 {
        return Err(Error::os("tamalloc", arg, libc::EINVAL));
    }
    // Nothing below allocates until the fallback `mmap` has been made: the tracer pairs the
    // ENOSYS of 554 with this thread's next mmap.
    // SAFETY: syscall 554 takes one size_t and touches no user memory; on kernels without it
    // the call fails with ENOSYS.
    let ret = unsafe { libc::syscall(SYS_TAMALLOC as libc::c_long, len) };
    if ret != -1 {
        let ptr = NonNull::new(ret as usize as *mut u8)
            .ok_or_else(|| Error::os("tamalloc", arg, libc::EFAULT))?;
        // The kernel maps PAGE_ALIGN(len) bytes.
        let Some(aligned) = page_align(len as u64) else {
            return Err(Error::os("tamalloc", arg, libc::ENOMEM));
        };
        return Ok(Region {
            ptr,
            len: aligned as usize,
            path: Path::Syscall,
        });
    }
    let errno = last_errno();
    if errno != libc::ENOSYS {
        return Err(Error::os("tamalloc", arg, errno));
    }
    let Some(aligned) = page_align(len as u64) else {
        return Err(Error::os("tamalloc", arg, libc::ENOMEM));
    };
    let aligned = aligned as usize;
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing; it aliases
    // nothing. Flags and protection are the documented fallback (TAMALLOC_*).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            aligned,
            TAMALLOC_PROT as libc::c_int,
            TAMALLOC_MAP_FLAGS as libc::c_int,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::os("tamalloc", arg, last_errno()));
    }
    let region = Region {
        ptr: NonNull::new(p.cast::<u8>())
            .ok_or_else(|| Error::os("tamalloc", arg, libc::EFAULT))?,
        len: aligned,
        path: Path::Fallback,
    };
    if aligned > isize::MAX as usize {
        // Slices cannot be this long; no x86-64 address space is this large anyway.
        drop(region);
        return Err(Error::os("tamalloc", arg, libc::ENOMEM));
    }
    Ok(region)
}

impl Region {
    /// First byte of the region (page aligned).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// First byte of the region, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes: the requested size rounded up to whole pages.
    #[expect(
        clippy::len_without_is_empty,
        reason = "a region is never empty: alloc(0) fails"
    )]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Which call produced the region.
    pub fn path(&self) -> Path {
        self.path
    }

    /// The whole region. Reading a page never touched maps the shared zero page: it counts
    /// as a `read_zero` fault and does not raise VmRSS.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live readable mapping owned by self, len <= isize::MAX
        // (checked in alloc/from_raw's contract), and u8 has no invalid bit patterns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole region, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Gives up ownership: the caller must unmap (`munmap`/`tafree`) or call [`Region::from_raw`].
    pub fn into_raw(self) -> (NonNull<u8>, usize, Path) {
        let me = std::mem::ManuallyDrop::new(self);
        (me.ptr, me.len, me.path)
    }

    /// Takes back a region given up by [`Region::into_raw`] (or returned by the C `tamalloc()`),
    /// `len` being the size asked for or the page-aligned length.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + PAGE_ALIGN(len)` must be one mapping made by [`alloc`] (or the C API) that
    /// nothing else owns or will unmap; `path` only labels it.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize, path: Path) -> Region {
        // No overflow: the mapping of this length exists (the caller's contract).
        let len = page_align(len as u64).map_or(len, |l| l as usize);
        Region { ptr, len, path }
    }

    /// Unmaps the region now, reporting `munmap`'s error (dropping ignores it).
    pub fn free(self) -> Result<(), Error> {
        let (ptr, len, _) = self.into_raw();
        // SAFETY: the mapping is owned by the region we just consumed.
        let r = unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::os("munmap", Some(len as u64), last_errno()))
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by self and no reference into it outlives self.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_einval_and_huge_is_enomem() {
        assert_eq!(alloc(0).unwrap_err().errno(), Some(libc::EINVAL));
        assert_eq!(alloc(usize::MAX).unwrap_err().errno(), Some(libc::ENOMEM));
    }

    #[test]
    fn small_alloc_is_one_zeroed_page() {
        let mut r = alloc(1).expect("alloc(1)");
        assert_eq!(r.len(), 4096);
        assert!(r.as_slice().iter().all(|&b| b == 0));
        r.as_mut_slice()[4095] = 7;
        assert_eq!(r.as_slice()[4095], 7);
        let (p, len, path) = r.into_raw();
        // SAFETY: p/len/path come straight from into_raw.
        let r = unsafe { Region::from_raw(p, len, path) };
        r.free().expect("munmap");
    }
}
