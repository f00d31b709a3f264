//! Process lifecycle: exec from a non-leader thread, MADV_WIPEONFORK, a pre-fork server,
//! and a fork racing a sibling thread's faults.

use std::{
    ffi::CString,
    path::Path,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

use super::{
    Outcome, PAGE, Truth, fork_child, madvise, no_thp, read, region, resident, resident_count,
    wait_ok, write, write_pages,
};

/// A non-leader thread execs this binary as `scenario exec-image`; the main thread never
/// returns from its join (exec ends it). Truth: exec-image's own bookkeeping.
pub fn exec_thread(report: Option<&Path>) -> anyhow::Result<Outcome> {
    let exe = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
    let mut argv = vec![
        CString::new(exe.as_os_str().as_encoded_bytes())?,
        CString::new("scenario")?,
        CString::new("exec-image")?,
        CString::new("--old-pid")?,
        CString::new(std::process::id().to_string())?,
    ];
    if let Some(r) = report {
        argv.push(CString::new("--report")?);
        argv.push(CString::new(r.as_os_str().as_encoded_bytes())?);
    }
    let thread = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: NUL-terminated argv of C strings that outlive the call; environ is libc's.
        unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
        bail!("execv: {}", std::io::Error::last_os_error())
    });
    match thread.join() {
        Ok(r) => r.map(|()| Outcome::Ran),
        Err(_) => bail!("the exec thread panicked"),
    }
}

const EXEC_PAGES: usize = 64;
/// README "Known limits, both modes", before 6.15.
const EXEC_THREAD_LIMIT: &str = "before 6.15, when the group leader leaves with `exit(2)` \
     before its threads, the tracer keeps counting them and forgets the process once \
     `/proc/PID` is gone (within one interval), and a non-leader thread's exec ends the \
     process: the new image's regions and faults are not counted (no summary for the pid).";

/// Whether the kernel says when a process's last thread exits (`group_dead` in
/// `sched:sched_process_exit`, 6.15 and later), which the tracer needs to follow an exec
/// from a non-leader thread.
fn group_dead_kernel() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    (major, minor) >= (6, 15)
}

/// The new image: it must have kept the process's pid; it writes 64 region pages.
pub fn exec_image(report: Option<&Path>, old_pid: u32) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "exec-thread",
        "bookkeeping: 64 first writes in the new image; mincore: 64 resident",
    );
    if t.pid != old_pid {
        bail!(
            "exec from a thread changed the pid from {old_pid} to {}",
            t.pid
        );
    }
    let base = region(EXEC_PAGES)?;
    t.regions = 1;
    write_pages(base, 0..EXEC_PAGES);
    t.add(FaultKind::WriteZero, EXEC_PAGES as u64);
    let res = resident_count(base, EXEC_PAGES)?;
    if res != EXEC_PAGES as u64 {
        bail!("{res} of {EXEC_PAGES} written pages resident");
    }
    t.info("resident", res);
    if !group_dead_kernel() {
        t.limit_in_both_modes(EXEC_THREAD_LIMIT, &[]);
        t.in_both_modes("regions", 0);
    }
    t.emit(report)?;
    Ok(Outcome::Ran)
}

const WIPE_PAGES: usize = 8;

/// A MADV_WIPEONFORK region written by the parent: the child starts with none of its pages
/// (mincore in the child: 0 resident), so its 8 writes are first touches.
pub fn wipeonfork(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "wipeonfork",
        "bookkeeping; mincore in the child before its writes: 0 resident",
    );
    let base = region(WIPE_PAGES)?;
    t.regions = 1;
    write_pages(base, 0..WIPE_PAGES);
    t.add(FaultKind::WriteZero, WIPE_PAGES as u64);
    madvise(base, WIPE_PAGES, libc::MADV_WIPEONFORK).context("madvise(MADV_WIPEONFORK)")?;
    let child = fork_child(|| {
        let mut c = Truth::new(
            "wipeonfork",
            "mincore before the writes: 0 resident; then 8 first writes",
        );
        let res = resident_count(base, WIPE_PAGES)?;
        if res != 0 {
            bail!("{res} pages of a MADV_WIPEONFORK region survived the fork");
        }
        write_pages(base, 0..WIPE_PAGES);
        c.add(FaultKind::WriteZero, WIPE_PAGES as u64);
        c.info("resident_at_start", res);
        c.emit(report)
    })?;
    wait_ok(child)?;
    t.emit(report)?;
    Ok(Outcome::Ran)
}

#[derive(clap::Args)]
pub struct PreforkArgs {
    /// Regions the parent holds when it forks (one page each... plus one).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(20..=100_000))]
    regions: u64,
    /// Children, all alive at once.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=4000))]
    children: u64,
}

/// Pages per pre-fork region.
const PREFORK_PAGES: usize = 2;
/// Regions whose page 0 the parent writes before forking.
const PREFORK_WRITTEN: usize = 10;

/// A pre-fork server: the parent holds `regions` two-page regions, writes page 0 of the
/// first ten, and forks `children` children that stay alive until all are forked. Child `i`
/// writes page 0 of ten regions (a copy-on-write of the parent's page for the first ten
/// regions, a first touch for the others), reads page 1 of three and writes page 1 of the
/// last region but one (after the parent unmapped the last); child 0 also forks a
/// grandchild (see [`grandchild`]). Truth: bookkeeping;
/// every fault event names its region (`check-trace`), and nothing is dropped.
pub fn prefork(report: Option<&Path>, args: &PreforkArgs) -> anyhow::Result<Outcome> {
    no_thp();
    let n = args.regions as usize;
    let mut t = Truth::new(
        "prefork",
        "bookkeeping: parent wrote page 0 of regions 0..10; children all alive at once",
    );
    let mut bases = Vec::with_capacity(n);
    for _ in 0..n {
        bases.push(region(PREFORK_PAGES)?);
    }
    t.regions = n as u64;
    for &b in &bases[..PREFORK_WRITTEN] {
        write(b, 0);
    }
    t.add(FaultKind::WriteZero, PREFORK_WRITTEN as u64);
    let mut fds = [0; 2];
    // SAFETY: a pipe whose write end the parent closes when all children are forked.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let mut children = Vec::new();
    // What a fork costs the parent (traced or not: compare by hand, never asserted).
    let started = std::time::Instant::now();
    for i in 0..args.children as usize {
        let bases = &bases;
        let pid = fork_child(|| {
            // SAFETY: our copy of the write end, then a blocking read until EOF.
            unsafe {
                libc::close(fds[1]);
                let mut b = 0u8;
                libc::read(fds[0], (&raw mut b).cast(), 1);
            }
            let mut c = Truth::new(
                "prefork",
                "bookkeeping: regions 0..10 page 0 shared copy-on-write, the rest untouched",
            );
            // Ten distinct regions: one of the parent's written ones, nine others.
            write(bases[i % PREFORK_WRITTEN], 0);
            c.add(FaultKind::Cow, 1);
            for k in 0..9 {
                let j = PREFORK_WRITTEN + (i * 9 + k) % (n - PREFORK_WRITTEN);
                write(bases[j], 0);
                c.add(FaultKind::WriteZero, 1);
            }
            for k in 0..3 {
                read(bases[(i + k * 7) % n], 1);
                c.add(FaultKind::ReadZero, 1);
            }
            // The parent unmapped the region below it after the fork, re-marking this
            // one's first page: still the region every child inherited.
            write(bases[n - 2], 1);
            c.add(FaultKind::WriteZero, 1);
            if i == 0 {
                grandchild(report, bases, &mut c)?;
            }
            c.emit(report)
        })?;
        children.push(pid);
    }
    let fork_ns = started.elapsed().as_nanos() as u64 / args.children;
    // Regions come top-down, so the last one lies just below the one before it: unmapping
    // it gives that one's first page a start marker again (the same region).
    // SAFETY: our own region of PREFORK_PAGES pages, never touched again by the parent.
    if unsafe { libc::munmap(bases[n - 1].cast(), PREFORK_PAGES * PAGE) } != 0 {
        bail!("munmap: {}", std::io::Error::last_os_error());
    }
    // SAFETY: closing our ends of the pipe releases the children.
    unsafe {
        libc::close(fds[1]);
        libc::close(fds[0]);
    }
    for pid in children {
        wait_ok(pid)?;
    }
    t.info("children", args.children);
    t.info("fork_mean_us", fork_ns / 1000);
    // The children share the parent's markers (their origin): no `map_full`, however many
    // regions times children (README "How the tracer keeps up": 10,000 x 300 was 2,747,856
    // lost markers when each child held a copy).
    t.emit(report)?;
    Ok(Outcome::Ran)
}

/// Child 0 of the pre-fork server makes a region of its own, then forks: the grandchild
/// inherits the server's markers through the same origin as its parent (links stay one
/// deep) and its parent's own marker as a copy. It writes page 0 of region 10 (child 0
/// wrote it: a `cow`), page 1 of the last region (nobody touched it) and page 0 of child
/// 0's region, each fault naming its region.
fn grandchild(report: Option<&Path>, bases: &[*mut u8], c: &mut Truth) -> anyhow::Result<()> {
    let own = region(PREFORK_PAGES)?;
    c.regions = 1;
    let last = bases[bases.len() - 1];
    let g = fork_child(|| {
        let mut t = Truth::new(
            "prefork",
            "bookkeeping: grandchild of child 0, which wrote page 0 of region 10",
        );
        write(bases[PREFORK_WRITTEN], 0);
        t.add(FaultKind::Cow, 1);
        write(last, 1);
        t.add(FaultKind::WriteZero, 1);
        write(own, 0);
        t.add(FaultKind::WriteZero, 1);
        t.emit(report)
    })?;
    wait_ok(g)
}

const RACE_PAGES: usize = 4096;
/// README "Known limits, both modes": the pages a child's first write may count `other`.
const FORK_RACE_LIMIT: &str = "A fork copies the parent's chunks (one walk of `CHUNKS`) \
     after the kernel copied the address space, so in tracepoint mode a sibling thread's \
     fault on a page in between can be inherited wrongly (the child's first fault on that \
     page then counts `other` or the other first-touch kind)";
const RACE_FORKS: usize = 16;

/// The writer's state, in a MAP_SHARED mapping: a fork write-protects none of it.
#[repr(C)]
struct Race {
    base: usize,
    go: AtomicBool,
    done: AtomicBool,
    progress: AtomicUsize,
    faults: AtomicUsize,
}

/// The writer: a raw CLONE_THREAD thread (glibc does not know it, so a fork's child never
/// looks for it) on a MAP_SHARED stack, storing only to the region and to `Race`. Every
/// fault it takes is a store to the region.
extern "C" fn race_writer(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Race` of `fork_race`, alive until `done`.
    let race = unsafe { &*arg.cast::<Race>() };
    while !race.go.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let before = thread_minor_faults();
    for i in 0..RACE_PAGES {
        write(race.base as *mut u8, i);
        race.progress.store(i + 1, Ordering::Release);
    }
    let n = thread_minor_faults() - before;
    race.faults.store(n as usize, Ordering::Release);
    race.done.store(true, Ordering::Release);
    0
}

/// The calling thread's minor faults (getrusage(RUSAGE_THREAD): the kernel's own count).
fn thread_minor_faults() -> u64 {
    // SAFETY: getrusage fills the struct it is given (on the caller's stack).
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru.ru_minflt as u64
    }
}

/// A sibling thread writes every page of a region once, in order, while the main thread
/// forks 16 children along the way. Truth: each child, before touching anything, asks
/// mincore which pages its copy of the address space holds: writing those is a `cow`,
/// writing the others a first touch. The parent made 4096 first writes, plus a `cow` each
/// time a fork landed between a fault of the writer and the retry of its store (the store
/// faults again): the writer's own minor-fault count (getrusage) tells how often.
pub fn fork_race(report: Option<&Path>) -> anyhow::Result<Outcome> {
    const STACK: usize = 64 * 1024;
    no_thp();
    let mut t = Truth::new(
        "fork-race",
        "children: mincore at their start; parent: the writer's getrusage minor faults",
    );
    let base = region(RACE_PAGES)?;
    t.regions = 1;
    // SAFETY: a shared anonymous mapping for the writer's state and stack, never unmapped.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK + PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if shared == libc::MAP_FAILED {
        bail!("mmap: {}", std::io::Error::last_os_error());
    }
    // Every page of it present before the writer starts: its stack never faults.
    // SAFETY: the whole mapping is ours.
    unsafe { std::ptr::write_bytes(shared.cast::<u8>(), 0, STACK + PAGE) };
    // And the code the writer runs is mapped: a first execution of a text page would be a
    // fault of its own (the writer's count then exceeds 4096 + forks, and the run fails).
    write(shared.cast(), 1);
    let _ = thread_minor_faults();
    let race_ptr = shared.cast::<Race>();
    // SAFETY: the mapping is fresh, page-aligned and large enough for a `Race`.
    let race = unsafe {
        race_ptr.write(Race {
            base: base as usize,
            go: AtomicBool::new(false),
            done: AtomicBool::new(false),
            progress: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
        });
        &*race_ptr
    };
    let flags = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM;
    // SAFETY: the writer runs on the top of the shared mapping (above `Race`'s page) and
    // touches only `Race` and the region, both alive for the life of the process.
    let tid = unsafe {
        libc::clone(
            race_writer,
            shared.cast::<u8>().add(STACK + PAGE).cast(),
            flags,
            race_ptr.cast(),
        )
    };
    if tid < 0 {
        bail!("clone: {}", std::io::Error::last_os_error());
    }
    let (progress, go) = (&race.progress, &race.go);
    let mut children = Vec::with_capacity(RACE_FORKS);
    go.store(true, Ordering::Release);
    for k in 0..RACE_FORKS {
        while progress.load(Ordering::Acquire) < k * RACE_PAGES / RACE_FORKS {
            std::hint::spin_loop();
        }
        let pid = fork_child(|| {
            let have = resident(base, RACE_PAGES)?;
            // A copied page still zero: the writer's fault had installed it, but its store
            // had not retired when the fork write-protected it (the store then faults
            // again in the parent: the writer's own fault count shows it).
            let raced = (0..RACE_PAGES)
                .filter(|&i| have[i] && read(base, i) == 0)
                .count() as u64;
            let mut c = Truth::new(
                "fork-race",
                "mincore at the child's start: resident pages are cow, the rest first writes",
            );
            let copied = have.iter().filter(|&&r| r).count() as u64;
            write_pages(base, 0..RACE_PAGES);
            c.add(FaultKind::Cow, copied);
            c.add(FaultKind::WriteZero, RACE_PAGES as u64 - copied);
            c.tracepoint("may_be_other", RACE_PAGES as u64 - copied);
            c.tracepoint("race", FORK_RACE_LIMIT);
            c.info("copied", copied);
            c.info("copied_before_the_store", raced);
            c.emit(report)
        })?;
        children.push(pid);
    }
    while !race.done.load(Ordering::Acquire) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let faults = race.faults.load(Ordering::Acquire) as u64;
    for pid in children {
        wait_ok(pid)?;
    }
    // Every fault of the writer is one of its stores: one first touch per page, and one
    // `cow` per store that a fork write-protected between its fault and its retry.
    let again = faults
        .checked_sub(RACE_PAGES as u64)
        .filter(|&n| n <= RACE_FORKS as u64)
        .ok_or_else(|| anyhow::anyhow!("the writer took {faults} faults for {RACE_PAGES} pages"))?;
    t.add(FaultKind::WriteZero, RACE_PAGES as u64);
    t.add(FaultKind::Cow, again);
    t.info("writer_faults", faults);
    t.info("resident", resident_count(base, RACE_PAGES)?);
    t.emit(report)?;
    Ok(Outcome::Ran)
}
