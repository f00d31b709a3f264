//! The `/proc` fallback of [`super`]: the same records as syscalls 555/556, read from
//! `/proc/PID/{status,oom_score,oom_score_adj,maps,smaps}` and `/proc/meminfo` (the table in
//! [`super`] says which field comes from where).

use std::io::Read as _;

use tamalloc_common::abi::{self, TAMALLOC_COMM_LEN};

use super::{GlobalStats, ProcStats, Source};
use crate::error::Error;

/// Reads a whole (small) /proc file into `buf`.
fn read_into(path: &str, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    std::fs::File::open(path)?.read_to_end(buf)?;
    Ok(())
}

fn is_gone(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH))
}

fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// Parses the leading unsigned number of `s` (after blanks); `None` without digits.
fn leading_u64(s: &[u8]) -> Option<u64> {
    let mut i = 0;
    while i < s.len() && (s[i] == b' ' || s[i] == b'\t') {
        i += 1;
    }
    let start = i;
    let mut v: u64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add(u64::from(s[i] - b'0'))?;
        i += 1;
    }
    (i > start).then_some(v)
}

/// Parses a signed decimal (an `oom_score_adj`), ignoring blanks and the trailing newline.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let s = s.trim_ascii();
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = leading_u64(digits)?;
    let v = i64::try_from(v).ok()?;
    Some(if neg { -v } else { v })
}

/// The `Key: value` lines of a `/proc` file such as `status` or `meminfo`, as (key, value
/// after the colon); lines without a colon are skipped.
fn fields(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    bytes.split(|&b| b == b'\n').filter_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], &line[colon + 1..]))
    })
}

/// The fields of `/proc/PID/status` that matter here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub name: [u8; TAMALLOC_COMM_LEN],
    /// The thread group (process) id: differs from the pid of a `/proc/TID` thread entry.
    pub tgid: Option<u64>,
    /// `None` for kernel threads and zombies (no `VmSize:` line).
    pub vm_size_kib: Option<u64>,
    pub vm_rss_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_shmem_kib: u64,
}

/// Parses `/proc/PID/status` with one pass over its lines.
pub fn parse_status(bytes: &[u8]) -> Status {
    let mut st = Status::default();
    for (key, value) in fields(bytes) {
        match key {
            b"Name" => {
                let name = value.trim_ascii();
                let n = name.len().min(TAMALLOC_COMM_LEN - 1);
                st.name[..n].copy_from_slice(&name[..n]);
            }
            b"Tgid" => st.tgid = leading_u64(value),
            b"VmSize" => st.vm_size_kib = leading_u64(value),
            b"VmRSS" => st.vm_rss_kib = leading_u64(value).unwrap_or(0),
            b"RssAnon" => st.rss_anon_kib = leading_u64(value).unwrap_or(0),
            b"RssFile" => st.rss_file_kib = leading_u64(value).unwrap_or(0),
            b"RssShmem" => {
                st.rss_shmem_kib = leading_u64(value).unwrap_or(0);
                // The last field we need; the rest of the file is signal and cpu masks.
                break;
            }
            _ => {}
        }
    }
    st
}

/// Tamalloc VMAs of one process: (regions, reserved KiB, resident KiB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TamallocVmas {
    pub regions: u64,
    pub reserved_kib: u64,
    pub resident_kib: u64,
}

const TAMALLOC_VMA_TAG: &[u8] = b"[anon:tamalloc]";

fn is_tamalloc_vma(header: &[u8]) -> bool {
    header.trim_ascii_end().ends_with(TAMALLOC_VMA_TAG)
}

/// Counts `[anon:tamalloc]` entries of `/proc/PID/maps`: (regions, reserved KiB).
pub fn parse_maps_tamalloc(bytes: &[u8]) -> (u64, u64) {
    let mut regions = 0;
    let mut kib = 0;
    for line in bytes.split(|&b| b == b'\n') {
        if !is_tamalloc_vma(line) {
            continue;
        }
        let range = line.split(|&b| b == b' ').next().unwrap_or_default();
        let mut parts = range.split(|&b| b == b'-');
        let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Some(a), Some(b)) = (parse_hex(a), parse_hex(b)) else {
            continue;
        };
        regions += 1;
        kib += b.saturating_sub(a) / 1024;
    }
    (regions, kib)
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        v = (v << 4) | u64::from((c as char).to_digit(16)?);
    }
    Some(v)
}

/// Sums `Size`/`Rss` of the `[anon:tamalloc]` entries of `/proc/PID/smaps`.
pub fn parse_smaps_tamalloc(bytes: &[u8]) -> TamallocVmas {
    let mut t = TamallocVmas::default();
    let mut inside = false;
    for line in bytes.split(|&b| b == b'\n') {
        let first = line.split(|&b| b == b' ').next().unwrap_or_default();
        if first.ends_with(b":") {
            if !inside {
                continue;
            }
            match first {
                b"Size:" => t.reserved_kib += leading_u64(&line[first.len()..]).unwrap_or(0),
                b"Rss:" => t.resident_kib += leading_u64(&line[first.len()..]).unwrap_or(0),
                _ => {}
            }
        } else if first.contains(&b'-') {
            // A VMA header line: "start-end perms offset dev inode [name]".
            inside = is_tamalloc_vma(line);
            if inside {
                t.regions += 1;
            }
        }
    }
    t
}

/// The tamalloc VMAs of `pid` from `/proc`: `maps` first (cheap), `smaps` only when it shows
/// one. `None` when we may not read its maps.
///
/// Opening `maps` takes the check syscall 555 makes of every other process,
/// `ptrace_may_access(PTRACE_MODE_READ_FSCREDS)` (LSMs included), so a denial here is the
/// syscall's `EPERM`: the fallback shows what 555 would, never more.
fn tamalloc_vmas_procfs(
    pid: &str,
    buf: &mut Vec<u8>,
) -> Result<Option<TamallocVmas>, std::io::Error> {
    match read_into(&format!("/proc/{pid}/maps"), buf) {
        Ok(()) => {}
        Err(e) if is_denied(&e) => return Ok(None),
        Err(e) => return Err(e),
    }
    let (regions, _) = parse_maps_tamalloc(buf);
    if regions == 0 {
        return Ok(Some(TamallocVmas::default()));
    }
    match read_into(&format!("/proc/{pid}/smaps"), buf) {
        Ok(()) => Ok(Some(parse_smaps_tamalloc(buf))),
        Err(e) if is_denied(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn permille(rss: u64, size: u64) -> u32 {
    rss.saturating_mul(1000)
        .checked_div(size)
        .map_or(0, |p| u32::try_from(p).unwrap_or(u32::MAX))
}

/// Reads one process from `/proc`. Like syscall 555, only user processes count: a kernel
/// thread or zombie (no `VmSize`) or a thread id that is not a process id is `ESRCH`.
fn read_proc(pid: u32, buf: &mut Vec<u8>) -> Result<ProcStats, Error> {
    let gone = |e: &std::io::Error| is_gone(e);
    let dir = pid.to_string();
    let path = format!("/proc/{dir}/status");
    match read_into(&path, buf) {
        Ok(()) => {}
        Err(e) if gone(&e) => return Err(Error::NoSuchProcess { pid }),
        Err(e) => return Err(Error::io(path, e)),
    }
    let st = parse_status(buf);
    if st.vm_size_kib.is_none() || st.tgid != Some(u64::from(pid)) {
        return Err(Error::NoSuchProcess { pid });
    }
    let mut raw = abi::ProcStats {
        pid: pid as i32,
        comm: st.name,
        vm_size_kib: st.vm_size_kib.unwrap_or_default(),
        vm_rss_kib: st.vm_rss_kib,
        rss_anon_kib: st.rss_anon_kib,
        rss_file_kib: st.rss_file_kib,
        rss_shmem_kib: st.rss_shmem_kib,
        ..Default::default()
    };
    raw.resident_permille = permille(raw.vm_rss_kib, raw.vm_size_kib);
    for (file, signed) in [("oom_score", false), ("oom_score_adj", true)] {
        let path = format!("/proc/{dir}/{file}");
        match read_into(&path, buf) {
            Ok(()) => {}
            Err(e) if gone(&e) => return Err(Error::NoSuchProcess { pid }),
            Err(e) => return Err(Error::io(path, e)),
        }
        let Some(v) = parse_i64(buf) else {
            return Err(Error::Procfs {
                path,
                reason: "not a number",
            });
        };
        if signed {
            raw.oom_score_adj = v.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
        } else {
            raw.oom_score = v.clamp(0, u32::MAX.into()) as u32;
        }
    }
    let t = match tamalloc_vmas_procfs(&dir, buf) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(Error::os(
                "get_memory_usage_stats",
                Some(pid.into()),
                libc::EPERM,
            ));
        }
        Err(e) if gone(&e) => return Err(Error::NoSuchProcess { pid }),
        Err(e) => return Err(Error::io(format!("/proc/{dir}/maps"), e)),
    };
    raw.tamalloc_regions = t.regions;
    raw.tamalloc_reserved_kib = t.reserved_kib;
    raw.tamalloc_resident_kib = t.resident_kib;
    Ok(ProcStats {
        raw,
        source: Source::Procfs,
    })
}

/// [`proc_stats`](super::proc_stats) from `/proc` only (whatever the kernel has).
pub fn proc_stats_procfs(pid: u32) -> Result<ProcStats, Error> {
    read_proc(pid, &mut Vec::with_capacity(2048))
}

/// The numeric entries of /proc, sorted.
fn proc_pids() -> Result<Vec<u32>, Error> {
    let dir = std::fs::read_dir("/proc").map_err(|e| Error::io("/proc", e))?;
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// [`all_proc_stats`](super::all_proc_stats) from `/proc` only. Processes that exit meanwhile
/// are left out, and so are those syscall 555 would leave out (not ptrace-readable).
pub fn all_proc_stats_procfs() -> Result<Vec<ProcStats>, Error> {
    let mut buf = Vec::with_capacity(2048);
    let mut out = Vec::new();
    for pid in proc_pids()? {
        match read_proc(pid, &mut buf) {
            Ok(p) => out.push(p),
            Err(Error::NoSuchProcess { .. }) => {}
            Err(Error::Os {
                errno: libc::EPERM, ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The fields of `/proc/meminfo` that matter here, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub committed_as_kib: u64,
    pub commit_limit_kib: u64,
}

/// Parses `/proc/meminfo`; a missing field is 0. (A pass per field: the file is ~50 lines.)
pub fn parse_meminfo(bytes: &[u8]) -> MemInfo {
    let kib = |key: &[u8]| {
        fields(bytes)
            .find(|&(k, _)| k == key)
            .and_then(|(_, v)| leading_u64(v))
            .unwrap_or(0)
    };
    MemInfo {
        mem_total_kib: kib(b"MemTotal"),
        mem_available_kib: kib(b"MemAvailable"),
        committed_as_kib: kib(b"Committed_AS"),
        commit_limit_kib: kib(b"CommitLimit"),
    }
}

/// [`global_stats`](super::global_stats) from `/proc` only.
pub fn global_stats_procfs() -> Result<GlobalStats, Error> {
    let mut buf = Vec::with_capacity(4096);
    read_into("/proc/meminfo", &mut buf).map_err(|e| Error::io("/proc/meminfo", e))?;
    let m = parse_meminfo(&buf);
    let mut raw = abi::GlobalStats {
        mem_total_kib: m.mem_total_kib,
        mem_available_kib: m.mem_available_kib,
        committed_as_kib: m.committed_as_kib,
        commit_limit_kib: m.commit_limit_kib,
        ..Default::default()
    };
    for p in all_proc_stats_procfs()? {
        raw.nr_processes += 1;
        raw.vm_size_kib += p.raw.vm_size_kib;
        raw.vm_rss_kib += p.raw.vm_rss_kib;
        raw.tamalloc_regions += p.raw.tamalloc_regions;
        raw.tamalloc_reserved_kib += p.raw.tamalloc_reserved_kib;
        raw.tamalloc_resident_kib += p.raw.tamalloc_resident_kib;
    }
    Ok(GlobalStats {
        raw,
        source: Source::Procfs,
    })
}

/// `(VmSize, VmRSS)` of the calling process in KiB, straight from `/proc/self/status`.
pub fn self_vm_kib() -> Result<(u64, u64), Error> {
    let mut buf = Vec::with_capacity(2048);
    read_into("/proc/self/status", &mut buf).map_err(|e| Error::io("/proc/self/status", e))?;
    let st = parse_status(&buf);
    Ok((st.vm_size_kib.unwrap_or(0), st.vm_rss_kib))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &[u8] =
        b"Name:\tsome-very-long-process-name\nUmask:\t0022\nState:\tS (sleeping)\n\
Tgid:\t42\nVmPeak:\t   10000 kB\nVmSize:\t    8000 kB\nVmLck:\t       0 kB\nVmRSS:\t    2000 kB\n\
RssAnon:\t     500 kB\nRssFile:\t    1400 kB\nRssShmem:\t     100 kB\nThreads:\t1\n";

    #[test]
    fn status_fields_parse() {
        let st = parse_status(STATUS);
        assert_eq!(&st.name, b"some-very-long-\0");
        assert_eq!(st.vm_size_kib, Some(8000));
        assert_eq!(st.tgid, Some(42));
        assert_eq!(st.vm_rss_kib, 2000);
        assert_eq!(st.rss_anon_kib, 500);
        assert_eq!(st.rss_file_kib, 1400);
        assert_eq!(st.rss_shmem_kib, 100);
    }

    #[test]
    fn kernel_thread_has_no_vmsize() {
        let st = parse_status(b"Name:\tkthreadd\nState:\tS (sleeping)\nThreads:\t1\n");
        assert_eq!(st.vm_size_kib, None);
        assert_eq!(st.vm_rss_kib, 0);
    }

    #[test]
    fn numbers_parse() {
        assert_eq!(parse_i64(b"-1000\n"), Some(-1000));
        assert_eq!(parse_i64(b"667\n"), Some(667));
        assert_eq!(parse_i64(b"x\n"), None);
        assert_eq!(parse_i64(b"-\n"), None);
        assert_eq!(leading_u64(b"  12 kB"), Some(12));
        assert_eq!(leading_u64(b" kB"), None);
        assert_eq!(permille(2000, 8000), 250);
        assert_eq!(permille(5, 0), 0);
    }

    #[test]
    fn maps_and_smaps_count_only_tamalloc_vmas() {
        let maps = b"55d0c0000000-55d0c0021000 r--p 00000000 08:01 123 /usr/bin/x\n\
7f0000000000-7f0000a00000 rw-p 00000000 00:00 0 [anon:tamalloc]\n\
7f0001000000-7f0001001000 rw-p 00000000 00:00 0 \n\
7f0002000000-7f0002004000 rw-p 00000000 00:00 0                          [anon:tamalloc]\n";
        assert_eq!(parse_maps_tamalloc(maps), (2, 10240 + 16));
        let smaps = b"7f0000000000-7f0000a00000 rw-p 00000000 00:00 0 [anon:tamalloc]\n\
Size:              10240 kB\nKernelPageSize:        4 kB\nRss:                 400 kB\nPss:   400 kB\n\
VmFlags: rd wr mr mw me ac\n\
7f0001000000-7f0001001000 rw-p 00000000 00:00 0 \nSize:  4 kB\nRss:   4 kB\n\
7f0002000000-7f0002004000 rw-p 00000000 00:00 0 [anon:tamalloc]\nSize:  16 kB\nRss:   8 kB\n";
        assert_eq!(
            parse_smaps_tamalloc(smaps),
            TamallocVmas {
                regions: 2,
                reserved_kib: 10256,
                resident_kib: 408
            }
        );
    }

    #[test]
    fn meminfo_parses() {
        let m = parse_meminfo(
            b"MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   20000000 kB\n\
CommitLimit:    12000000 kB\nCommitted_AS:    3000000 kB\n",
        );
        assert_eq!(
            m,
            MemInfo {
                mem_total_kib: 24_000_000,
                mem_available_kib: 20_000_000,
                committed_as_kib: 3_000_000,
                commit_limit_kib: 12_000_000,
            }
        );
    }
}
