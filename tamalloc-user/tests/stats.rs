//! The statistics: the syscalls where the kernel has them, /proc otherwise, and the same
//! answers either way.

use tamalloc::stats::{Source, all_proc_stats, global_stats, proc_stats, self_vm_kib};

fn kernel_has(nr: libc::c_long) -> bool {
    // SAFETY: invalid flags (u32::MAX) make 555/556 fail before touching any buffer.
    let r = unsafe { libc::syscall(nr, 0, 0, 0, 0, u32::MAX as libc::c_long) };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

fn status_field(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
        .trim()
        .to_owned()
}

fn kib(name: &str) -> u64 {
    status_field(name)
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn own_stats_match_proc_self_status() {
    let me = std::process::id();
    let s = proc_stats(me).expect("own stats");
    let want_source = if kernel_has(555) {
        Source::Syscall
    } else {
        Source::Procfs
    };
    assert_eq!(s.source, want_source);
    assert_eq!(s.pid(), me);
    assert_eq!(s.comm(), status_field("Name"));
    // Other test threads map and unmap meanwhile (thread stacks, malloc arenas of 64 MiB):
    // compare only a reading that /proc/self/status shows unchanged around it.
    let mut compared = false;
    for _ in 0..100 {
        let before = (kib("VmSize"), kib("VmRSS"));
        let s = proc_stats(me).expect("own stats");
        let after = (kib("VmSize"), kib("VmRSS"));
        if before.0 == after.0 {
            assert_eq!(s.raw.vm_size_kib, before.0, "{:?}", s.raw);
            let (lo, hi) = (before.1.min(after.1), before.1.max(after.1));
            assert!(
                (lo.saturating_sub(1024)..=hi + 1024).contains(&s.raw.vm_rss_kib),
                "VmRSS {} not within {lo}..={hi} KiB",
                s.raw.vm_rss_kib
            );
            compared = true;
            break;
        }
    }
    assert!(compared, "VmSize never stood still for one reading");
    assert!(s.raw.vm_rss_kib <= s.raw.vm_size_kib);
    assert!(s.raw.rss_anon_kib + s.raw.rss_file_kib + s.raw.rss_shmem_kib > 0);
    let adj: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .expect("oom_score_adj")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(s.raw.oom_score_adj, adj);
    assert!(s.raw.oom_score <= 2000);
    assert!(s.raw.resident_permille <= 1000);
    assert_eq!(
        u64::from(s.raw.resident_permille),
        s.raw.vm_rss_kib * 1000 / s.raw.vm_size_kib
    );
}

#[test]
fn self_vm_kib_reads_status() {
    let (size, rss) = self_vm_kib().expect("VmSize/VmRSS");
    assert!(size > 0 && rss > 0 && rss <= size);
}

#[test]
fn unknown_pid_is_esrch() {
    // pid_max is at most 2^22: these never exist.
    for pid in [i32::MAX as u32, u32::MAX, 999_999_999] {
        let e = proc_stats(pid).expect_err("no such process");
        assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
        assert_eq!(e.to_string(), format!("process {pid} not found (ESRCH)"));
    }
}

#[test]
fn kernel_threads_and_thread_ids_are_esrch() {
    // A thread of this process has a /proc/TID entry but is not a process.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).expect("send");
        let _ = done_rx.recv();
    });
    let tid = rx.recv().expect("tid") as u32;
    let e = proc_stats(tid).expect_err("a thread id is not a process");
    assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
    done_tx.send(()).expect("send");
    t.join().expect("join");
    // kthreadd is pid 2 in the initial pid namespace; elsewhere pid 2 may be a user process.
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    if comm.trim() == "kthreadd" {
        let e = proc_stats(2).expect_err("a kernel thread is not a user process");
        assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
    }
}

#[test]
fn all_processes_include_this_one() {
    let all = all_proc_stats().expect("every process");
    let me = std::process::id();
    let mine = all
        .iter()
        .find(|p| p.pid() == me)
        .expect("this process is listed");
    assert_eq!(mine.comm(), status_field("Name"));
    assert!(
        all.windows(2).all(|w| w[0].raw.pid < w[1].raw.pid),
        "sorted by pid"
    );
    // Kernel threads (no mm) are left out.
    assert!(all.iter().all(|p| p.raw.vm_size_kib > 0));
    assert!(all.iter().all(|p| p.source == mine.source));
}

#[test]
fn global_stats_are_sane() {
    let g = global_stats().expect("global stats");
    let r = g.raw;
    assert!(r.nr_processes >= 1);
    assert!(r.mem_total_kib > 0);
    assert!(r.mem_available_kib <= r.mem_total_kib);
    assert!(r.commit_limit_kib > 0);
    assert!(r.vm_rss_kib <= r.vm_size_kib);
    assert!(r.tamalloc_resident_kib <= r.tamalloc_reserved_kib);
    let want = if kernel_has(556) {
        Source::Syscall
    } else {
        Source::Procfs
    };
    assert_eq!(g.source, want);
    let json = serde_json::to_value(g).expect("json");
    for field in [
        "nr_processes",
        "vm_size_kib",
        "vm_rss_kib",
        "tamalloc_regions",
        "tamalloc_reserved_kib",
        "tamalloc_resident_kib",
        "mem_total_kib",
        "mem_available_kib",
        "committed_as_kib",
        "commit_limit_kib",
    ] {
        assert!(json[field].is_u64(), "{field} in {json}");
    }
}
