//! The C API of `libtamalloc.so`, declared in `include/tamalloc.h`.
//!
//! Every function returns `NULL`/`-1` and sets `errno` on failure, and never unwinds into C:
//! the bodies do not panic on any input, and a panic that still happened (a bug) is caught
//! and reported as `EFAULT`.

use std::{
    ffi::c_void,
    panic::{AssertUnwindSafe, catch_unwind},
    ptr::NonNull,
};

use tamalloc_common::abi;

use crate::{
    alloc::{Path, Region, alloc},
    error::{Error, set_errno},
    stats,
};

/// Runs `f`, turning an error or a panic into `errno` + `fail`.
fn guard<T>(fail: T, f: impl FnOnce() -> Result<T, Error>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e.errno().unwrap_or(libc::EIO));
            fail
        }
        Err(_) => {
            set_errno(libc::EFAULT);
            fail
        }
    }
}

/// `void *tamalloc(size_t size)`: a zero-filled region of `PAGE_ALIGN(size)` bytes, from
/// syscall 554 or its documented `mmap` fallback. `NULL` + `errno` (`EINVAL` for 0, `ENOMEM`)
/// on failure.
#[unsafe(no_mangle)]
pub extern "C" fn tamalloc(size: usize) -> *mut c_void {
    guard(std::ptr::null_mut(), || {
        let (ptr, _, _) = alloc(size)?.into_raw();
        Ok(ptr.as_ptr().cast())
    })
}

/// `int tafree(void *ptr, size_t size)`: unmaps a region from `tamalloc()`, `size` being the
/// size it was asked for. 0, or -1 + `errno` (`EINVAL` for `NULL`, an unaligned pointer or a
/// zero size).
///
/// # Safety
///
/// `ptr` must come from `tamalloc(size)` and not have been freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tafree(ptr: *mut c_void, size: usize) -> libc::c_int {
    guard(-1, || {
        let Some(p) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(Error::os("tafree", Some(0), libc::EINVAL));
        };
        if size == 0 || !(p.as_ptr() as usize).is_multiple_of(4096) {
            return Err(Error::os("tafree", Some(size as u64), libc::EINVAL));
        }
        // SAFETY: the caller promises ptr/size come from tamalloc(size) and are not freed; the
        // path only labels the region, munmap is the same for both.
        let region = unsafe { Region::from_raw(p, size, Path::Fallback) };
        region.free()?;
        Ok(0)
    })
}

/// `long tamalloc_proc_stats(pid_t pid, struct tamalloc_proc_stats *buf, unsigned int count)`:
/// `pid > 0` writes that process's record (if `count >= 1`) and returns 1; `pid == 0` writes
/// at most `count` records of every process and returns how many there are. -1 + `errno`
/// (`ESRCH`, `EINVAL` for `pid < 0`, `EFAULT` for a `NULL` buffer with `count > 0`).
///
/// # Safety
///
/// `buf` must have room for `count` records, or be `NULL` with `count == 0`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tamalloc_proc_stats(
    pid: libc::pid_t,
    buf: *mut abi::ProcStats,
    count: libc::c_uint,
) -> libc::c_long {
    guard(-1, || {
        if pid < 0 {
            return Err(Error::os("tamalloc_proc_stats", None, libc::EINVAL));
        }
        if buf.is_null() && count > 0 {
            return Err(Error::os("tamalloc_proc_stats", None, libc::EFAULT));
        }
        let records = if pid > 0 {
            vec![stats::proc_stats(pid as u32)?]
        } else {
            stats::all_proc_stats()?
        };
        for (i, r) in records.iter().take(count as usize).enumerate() {
            // SAFETY: i < count and the caller gave room for count records.
            unsafe { buf.add(i).write_unaligned(r.raw) };
        }
        Ok(records.len() as libc::c_long)
    })
}

/// `int tamalloc_global_stats(struct tamalloc_global_stats *buf)`: 0, or -1 + `errno`.
///
/// # Safety
///
/// `buf` must point to a writable `struct tamalloc_global_stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tamalloc_global_stats(buf: *mut abi::GlobalStats) -> libc::c_int {
    guard(-1, || {
        if buf.is_null() {
            return Err(Error::os("tamalloc_global_stats", None, libc::EFAULT));
        }
        let g = stats::global_stats()?;
        // SAFETY: the caller gave a writable record.
        unsafe { buf.write_unaligned(g.raw) };
        Ok(0)
    })
}
