//! Memory statistics: syscalls 555/556, or `/proc` on kernels without them.
//!
//! Every function tries the syscall first (`syscall.rs`) and falls back to `/proc`
//! (`procfs.rs`) only when it answers `ENOSYS`; the record says which one it came from
//! ([`Source`]). The `/proc` fallback reads:
//!
//! | field | from |
//! | --- | --- |
//! | `comm`, `vm_size_kib`, `vm_rss_kib`, `rss_anon_kib`, `rss_file_kib`, `rss_shmem_kib` | `/proc/PID/status` (`Name`, `VmSize`, `VmRSS`, `RssAnon`, `RssFile`, `RssShmem`) |
//! | `oom_score`, `oom_score_adj` | `/proc/PID/oom_score`, `/proc/PID/oom_score_adj` |
//! | `resident_permille` | `vm_rss_kib * 1000 / vm_size_kib` |
//! | `tamalloc_regions`, `tamalloc_reserved_kib`, `tamalloc_resident_kib` | `/proc/PID/maps` entries named `[anon:tamalloc]`, and their `Size`/`Rss` in `/proc/PID/smaps` (read only when there is one) |
//! | global `mem_*`, `committed_as_kib`, `commit_limit_kib` | `/proc/meminfo` |
//! | global `nr_processes`, sums | every `/proc/PID` with a `VmSize` (kernel threads and zombies have none) |
//!
//! Fallback regions (plain `mmap`) carry no name, so they are not counted as tamalloc regions
//! by `/proc`; only the patched kernel's `[anon:tamalloc]` VMAs are.
//!
//! The JSON of `tamalloc stats --json` and `tamalloc global --json` is the `Serialize` of
//! [`ProcStats`] and [`GlobalStats`]: the uapi record's own (tamalloc-common, feature `user`)
//! followed by `source`.

mod procfs;
mod syscall;

use serde::Serialize;
use tamalloc_common::abi;

pub use self::procfs::{
    MemInfo, Status, TamallocVmas, all_proc_stats_procfs, global_stats_procfs, parse_maps_tamalloc,
    parse_meminfo, parse_smaps_tamalloc, parse_status, proc_stats_procfs, self_vm_kib,
};
use crate::error::Error;

/// Where a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Syscall 555 or 556 of the patched kernel.
    Syscall,
    /// `/proc`, on a kernel without the syscalls.
    Procfs,
}

impl Source {
    /// `"syscall"` or `"procfs"`, the JSON value.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Syscall => "syscall",
            Self::Procfs => "procfs",
        }
    }
}

/// One process's statistics. Its JSON (`tamalloc stats --json`): the uapi names of
/// `struct tamalloc_proc_stats`, `comm` as a string, then `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProcStats {
    /// Exactly `struct tamalloc_proc_stats`.
    #[serde(flatten)]
    pub raw: abi::ProcStats,
    pub source: Source,
}

impl ProcStats {
    pub fn pid(&self) -> u32 {
        self.raw.pid as u32
    }

    /// The command name (lossy UTF-8).
    pub fn comm(&self) -> String {
        String::from_utf8_lossy(self.raw.comm_bytes()).into_owned()
    }
}

/// System-wide statistics. Its JSON (`tamalloc global --json`): the uapi names of
/// `struct tamalloc_global_stats`, then `source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GlobalStats {
    /// Exactly `struct tamalloc_global_stats`.
    #[serde(flatten)]
    pub raw: abi::GlobalStats,
    pub source: Source,
}

/// The statistics of process `pid` (syscall 555, else `/proc`).
///
/// A pid that is not a user process (does not exist, has exited, is a kernel thread or a
/// thread id that is not a process id) is [`Error::NoSuchProcess`] (`ESRCH`), as in 555.
pub fn proc_stats(pid: u32) -> Result<ProcStats, Error> {
    let Ok(spid) = i32::try_from(pid) else {
        return Err(Error::NoSuchProcess { pid });
    };
    if spid == 0 {
        return Err(Error::os("get_memory_usage_stats", Some(0), libc::EINVAL));
    }
    let mut one = [abi::ProcStats::default()];
    match syscall::proc_stats(spid, &mut one) {
        Ok(_) => Ok(ProcStats {
            raw: one[0],
            source: Source::Syscall,
        }),
        Err(libc::ENOSYS) => proc_stats_procfs(pid),
        Err(libc::ESRCH) => Err(Error::NoSuchProcess { pid }),
        Err(e) => Err(Error::os("get_memory_usage_stats", Some(pid.into()), e)),
    }
}

/// Every process of the caller's pid namespace, by pid (syscall 555 with pid 0, else `/proc`;
/// kernel threads are left out by both).
pub fn all_proc_stats() -> Result<Vec<ProcStats>, Error> {
    let mut buf: Vec<abi::ProcStats> = Vec::new();
    for _ in 0..16 {
        match syscall::proc_stats(0, &mut buf) {
            Ok(n) if n <= buf.len() => {
                buf.truncate(n);
                let mut out: Vec<ProcStats> = buf
                    .into_iter()
                    .map(|raw| ProcStats {
                        raw,
                        source: Source::Syscall,
                    })
                    .collect();
                out.sort_by_key(|p| p.raw.pid);
                return Ok(out);
            }
            // More processes than room: grow with some slack and ask again.
            Ok(n) => buf = vec![abi::ProcStats::default(); n + n / 8 + 16],
            Err(libc::ENOSYS) => return all_proc_stats_procfs(),
            Err(e) => return Err(Error::os("get_memory_usage_stats", Some(0), e)),
        }
    }
    Err(Error::os("get_memory_usage_stats", Some(0), libc::EAGAIN))
}

/// System-wide statistics (syscall 556, else `/proc`).
pub fn global_stats() -> Result<GlobalStats, Error> {
    match syscall::global_stats() {
        Ok(raw) => Ok(GlobalStats {
            raw,
            source: Source::Syscall,
        }),
        Err(libc::ENOSYS) => global_stats_procfs(),
        Err(e) => Err(Error::os("get_global_memory_usage_stats", None, e)),
    }
}

#[cfg(test)]
mod tests {
    use tamalloc_common::abi::TAMALLOC_COMM_LEN;

    use super::*;

    #[test]
    fn json_uses_uapi_names() {
        let mut raw = abi::ProcStats {
            pid: 7,
            ..Default::default()
        };
        raw.comm[..3].copy_from_slice(b"abc");
        let p = ProcStats {
            raw,
            source: Source::Procfs,
        };
        let v = serde_json::to_value(p).unwrap();
        assert_eq!(v["pid"], 7);
        assert_eq!(v["comm"], "abc");
        assert_eq!(v["source"], "procfs");
        assert!(v.get("tamalloc_resident_kib").is_some());
    }

    /// The exact bytes of `tamalloc stats --json` and `tamalloc global --json`: field order,
    /// names, `comm` as lossy UTF-8 (escaped), `source` last.
    #[test]
    fn json_bytes_are_pinned() {
        let mut raw = abi::ProcStats {
            pid: 7,
            oom_score: 1,
            oom_score_adj: -2,
            resident_permille: 3,
            comm: [0; TAMALLOC_COMM_LEN],
            vm_size_kib: 4,
            vm_rss_kib: 5,
            rss_anon_kib: 6,
            rss_file_kib: 8,
            rss_shmem_kib: 9,
            tamalloc_regions: 10,
            tamalloc_reserved_kib: 11,
            tamalloc_resident_kib: 12,
        };
        raw.comm[..5].copy_from_slice(b"a\"\xffb\n");
        let p = ProcStats {
            raw,
            source: Source::Syscall,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap_or_default(),
            concat!(
                r#"{"pid":7,"comm":"a\""#,
                "\u{fffd}",
                r#"b\n","oom_score":1,"oom_score_adj":-2,"resident_permille":3,"#,
                r#""vm_size_kib":4,"vm_rss_kib":5,"rss_anon_kib":6,"rss_file_kib":8,"#,
                r#""rss_shmem_kib":9,"tamalloc_regions":10,"tamalloc_reserved_kib":11,"#,
                r#""tamalloc_resident_kib":12,"source":"syscall"}"#,
            )
        );
        let g = GlobalStats {
            raw: abi::GlobalStats {
                nr_processes: 1,
                vm_size_kib: 2,
                vm_rss_kib: 3,
                tamalloc_regions: 4,
                tamalloc_reserved_kib: 5,
                tamalloc_resident_kib: 6,
                mem_total_kib: 7,
                mem_available_kib: 8,
                committed_as_kib: 9,
                commit_limit_kib: 10,
            },
            source: Source::Procfs,
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap_or_default(),
            concat!(
                r#"{"nr_processes":1,"vm_size_kib":2,"vm_rss_kib":3,"tamalloc_regions":4,"#,
                r#""tamalloc_reserved_kib":5,"tamalloc_resident_kib":6,"mem_total_kib":7,"#,
                r#""mem_available_kib":8,"committed_as_kib":9,"commit_limit_kib":10,"#,
                r#""source":"procfs"}"#,
            )
        );
    }
}
