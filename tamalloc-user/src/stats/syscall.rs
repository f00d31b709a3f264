//! Syscalls 555 and 556 of the patched kernel, as `Result<_, errno>`; the callers in
//! [`super`] turn `ENOSYS` into the `/proc` fallback and the rest into [`crate::Error`].

use std::mem::size_of;

use tamalloc_common::abi::{self, SYS_GET_GLOBAL_MEMORY_USAGE_STATS, SYS_GET_MEMORY_USAGE_STATS};

use crate::error::last_errno;

/// `get_memory_usage_stats(pid, buf, buf.len(), sizeof *buf, 0)`: the number of records the
/// kernel has (which may exceed `buf.len()` for pid 0), or `Err(errno)`.
pub(super) fn proc_stats(pid: i32, buf: &mut [abi::ProcStats]) -> Result<usize, i32> {
    let count = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let ptr = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    };
    // SAFETY: the kernel writes at most `count` records of `sizeof *buf` bytes into `buf`,
    // which has room for them; abi::ProcStats is plain data valid for any bytes.
    let r = unsafe {
        libc::syscall(
            SYS_GET_MEMORY_USAGE_STATS as libc::c_long,
            pid as libc::c_long,
            ptr,
            count as libc::c_long,
            size_of::<abi::ProcStats>(),
            0 as libc::c_long,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

/// `get_global_memory_usage_stats(&raw, sizeof raw, 0)`, or `Err(errno)`.
pub(super) fn global_stats() -> Result<abi::GlobalStats, i32> {
    let mut raw = abi::GlobalStats::default();
    // SAFETY: the kernel writes at most `usize` = sizeof(raw) bytes into `raw`, plain data.
    let r = unsafe {
        libc::syscall(
            SYS_GET_GLOBAL_MEMORY_USAGE_STATS as libc::c_long,
            &raw mut raw,
            size_of::<abi::GlobalStats>(),
            0 as libc::c_long,
        )
    };
    if r < 0 { Err(last_errno()) } else { Ok(raw) }
}
