//! The ABI of syscalls 554-556, mirroring `include/uapi/linux/tamalloc.h`.
//!
//! Layout tests below pin the size and every field offset, so this file and the C header
//! cannot drift apart silently.

/// `void *tamalloc(size_t size)`: a fresh private anonymous `MAP_NORESERVE` mapping.
pub const SYS_TAMALLOC: i64 = 554;
/// `long get_memory_usage_stats(pid_t pid, struct tamalloc_proc_stats *buf,
/// unsigned int count, size_t usize, unsigned int flags)`.
pub const SYS_GET_MEMORY_USAGE_STATS: i64 = 555;
/// `long get_global_memory_usage_stats(struct tamalloc_global_stats *buf, size_t usize,
/// unsigned int flags)`.
pub const SYS_GET_GLOBAL_MEMORY_USAGE_STATS: i64 = 556;

/// The x86-64 `mmap`/`munmap`/`mremap` numbers the tracer follows for regions.
pub const SYS_MMAP: i64 = 9;
pub const SYS_BRK: i64 = 12;
pub const SYS_PRCTL: i64 = 157;
pub const SYS_MUNMAP: i64 = 11;
pub const SYS_MREMAP: i64 = 25;
pub const SYS_CLONE: i64 = 56;
pub const SYS_FORK: i64 = 57;
pub const SYS_VFORK: i64 = 58;
pub const SYS_CLONE3: i64 = 435;

/// Linux's `ENOSYS`: a kernel without the patch answers 554 with it.
pub const ENOSYS: i64 = 38;

/// Protection and flags of a tamalloc region, both for the in-kernel `vm_mmap` and for the
/// documented fallback `mmap` on kernels without syscall 554.
pub const TAMALLOC_PROT: u64 = 0x1 | 0x2; // PROT_READ | PROT_WRITE
pub const TAMALLOC_MAP_FLAGS: u64 = 0x02 | 0x20 | 0x4000; // MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE

/// The name `/proc/PID/maps` shows for a tamalloc VMA (`[anon:tamalloc]`).
pub const TAMALLOC_VMA_NAME: &str = "tamalloc";

pub const TAMALLOC_COMM_LEN: usize = 16;

/// One process, as syscall 555 reports it (`struct tamalloc_proc_stats`).
///
/// 555 (v2.1) reports, besides the caller's own, only processes the caller may ptrace-read
/// (`PTRACE_MODE_READ_FSCREDS`, which asks the LSMs too), whatever `hidepid=` says: a subset
/// of what `/proc` shows it. A pid it may not read is `ESRCH` where a `hidepid=` instance
/// hides it, else `EPERM`. The `tamalloc_*` fields are checked again on the thread whose mm
/// they come from (as smaps) and are 0 if that fails.
///
/// Serialized (feature `user`) with the uapi names, `comm` as a string (the impl, and why it
/// is written by hand, is in `abi::json`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcStats {
    /// The process id in the caller's pid namespace.
    pub pid: i32,
    /// `/proc/PID/oom_score`, 0..=2000.
    pub oom_score: u32,
    /// `/proc/PID/oom_score_adj`, -1000..=1000.
    pub oom_score_adj: i32,
    /// VmRSS * 1000 / VmSize, 0 when VmSize is 0.
    pub resident_permille: u32,
    /// NUL-padded command name.
    pub comm: [u8; TAMALLOC_COMM_LEN],
    pub vm_size_kib: u64,
    pub vm_rss_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
    /// Number of tamalloc VMAs.
    pub tamalloc_regions: u64,
    /// Size of all tamalloc VMAs.
    pub tamalloc_reserved_kib: u64,
    /// Resident (not zero-page) pages of tamalloc VMAs.
    pub tamalloc_resident_kib: u64,
}

/// Size of the first published `struct tamalloc_proc_stats`.
pub const TAMALLOC_PROC_STATS_SIZE_VER0: usize = 96;

/// System-wide totals, as syscall 556 reports them (`struct tamalloc_global_stats`).
///
/// Serialized (feature `user`) with the uapi names, in layout order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct GlobalStats {
    /// Processes (not kernel threads) in the caller's pid namespace that 555 shows it; the
    /// sums below are over them, an mm shared by several processes counted once by 556 (the
    /// `/proc` fallback cannot tell and counts it per process).
    pub nr_processes: u64,
    pub vm_size_kib: u64,
    pub vm_rss_kib: u64,
    pub tamalloc_regions: u64,
    pub tamalloc_reserved_kib: u64,
    pub tamalloc_resident_kib: u64,
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub committed_as_kib: u64,
    pub commit_limit_kib: u64,
}

/// Size of the first published `struct tamalloc_global_stats`.
pub const TAMALLOC_GLOBAL_STATS_SIZE_VER0: usize = 80;

impl ProcStats {
    /// The command name up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..end]
    }
}

/// The JSON form of [`ProcStats`]: `pid`, then `comm`, then the other fields in layout order.
///
/// Written by hand rather than derived because `tamalloc stats --json` has always put `comm`
/// second while the uapi layout puts it fifth, and because `comm` is written as lossy UTF-8 up
/// to its first NUL. The destructuring has no `..`, so a field added to the struct does not
/// compile until it is serialized here too.
#[cfg(feature = "user")]
mod json {
    use core::fmt;

    use serde::ser::{Serialize, SerializeStruct as _, Serializer};

    use super::ProcStats;

    impl Serialize for ProcStats {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let Self {
                pid,
                oom_score,
                oom_score_adj,
                resident_permille,
                comm: _,
                vm_size_kib,
                vm_rss_kib,
                rss_anon_kib,
                rss_file_kib,
                rss_shmem_kib,
                tamalloc_regions,
                tamalloc_reserved_kib,
                tamalloc_resident_kib,
            } = self;
            let mut s = serializer.serialize_struct("ProcStats", 13)?;
            s.serialize_field("pid", pid)?;
            s.serialize_field("comm", &Lossy(self.comm_bytes()))?;
            s.serialize_field("oom_score", oom_score)?;
            s.serialize_field("oom_score_adj", oom_score_adj)?;
            s.serialize_field("resident_permille", resident_permille)?;
            s.serialize_field("vm_size_kib", vm_size_kib)?;
            s.serialize_field("vm_rss_kib", vm_rss_kib)?;
            s.serialize_field("rss_anon_kib", rss_anon_kib)?;
            s.serialize_field("rss_file_kib", rss_file_kib)?;
            s.serialize_field("rss_shmem_kib", rss_shmem_kib)?;
            s.serialize_field("tamalloc_regions", tamalloc_regions)?;
            s.serialize_field("tamalloc_reserved_kib", tamalloc_reserved_kib)?;
            s.serialize_field("tamalloc_resident_kib", tamalloc_resident_kib)?;
            s.end()
        }
    }

    /// Bytes shown as `String::from_utf8_lossy` would (each invalid sequence is one U+FFFD),
    /// without allocating: this crate is no_std.
    struct Lossy<'a>(&'a [u8]);

    impl fmt::Display for Lossy<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for chunk in self.0.utf8_chunks() {
                f.write_str(chunk.valid())?;
                if !chunk.invalid().is_empty() {
                    f.write_str("\u{fffd}")?;
                }
            }
            Ok(())
        }
    }

    impl Serialize for Lossy<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(self)
        }
    }

    #[cfg(test)]
    mod tests {
        extern crate std;
        use std::{format, string::String};

        use super::Lossy;

        #[test]
        fn lossy_is_from_utf8_lossy() {
            let cases: [&[u8]; 6] = [
                b"demo",
                b"",
                b"a\xffb",
                b"\xe2\x82",
                b"\xf0\x9f\x92\x96 ok \xc3",
                b"\xed\xa0\x80x",
            ];
            for bytes in cases {
                assert_eq!(
                    format!("{}", Lossy(bytes)),
                    String::from_utf8_lossy(bytes),
                    "{bytes:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn proc_stats_layout_matches_uapi() {
        assert_eq!(size_of::<ProcStats>(), TAMALLOC_PROC_STATS_SIZE_VER0);
        assert_eq!(offset_of!(ProcStats, pid), 0);
        assert_eq!(offset_of!(ProcStats, oom_score), 4);
        assert_eq!(offset_of!(ProcStats, oom_score_adj), 8);
        assert_eq!(offset_of!(ProcStats, resident_permille), 12);
        assert_eq!(offset_of!(ProcStats, comm), 16);
        assert_eq!(offset_of!(ProcStats, vm_size_kib), 32);
        assert_eq!(offset_of!(ProcStats, vm_rss_kib), 40);
        assert_eq!(offset_of!(ProcStats, rss_anon_kib), 48);
        assert_eq!(offset_of!(ProcStats, rss_file_kib), 56);
        assert_eq!(offset_of!(ProcStats, rss_shmem_kib), 64);
        assert_eq!(offset_of!(ProcStats, tamalloc_regions), 72);
        assert_eq!(offset_of!(ProcStats, tamalloc_reserved_kib), 80);
        assert_eq!(offset_of!(ProcStats, tamalloc_resident_kib), 88);
    }

    #[test]
    fn global_stats_layout_matches_uapi() {
        assert_eq!(size_of::<GlobalStats>(), TAMALLOC_GLOBAL_STATS_SIZE_VER0);
        assert_eq!(offset_of!(GlobalStats, nr_processes), 0);
        assert_eq!(offset_of!(GlobalStats, vm_size_kib), 8);
        assert_eq!(offset_of!(GlobalStats, vm_rss_kib), 16);
        assert_eq!(offset_of!(GlobalStats, tamalloc_regions), 24);
        assert_eq!(offset_of!(GlobalStats, tamalloc_reserved_kib), 32);
        assert_eq!(offset_of!(GlobalStats, tamalloc_resident_kib), 40);
        assert_eq!(offset_of!(GlobalStats, mem_total_kib), 48);
        assert_eq!(offset_of!(GlobalStats, mem_available_kib), 56);
        assert_eq!(offset_of!(GlobalStats, committed_as_kib), 64);
        assert_eq!(offset_of!(GlobalStats, commit_limit_kib), 72);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut s = ProcStats::default();
        s.comm[..4].copy_from_slice(b"demo");
        assert_eq!(s.comm_bytes(), b"demo");
    }
}
