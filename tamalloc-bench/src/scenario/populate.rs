//! Pages that become present without a page fault of the process: GUP (MADV_POPULATE_WRITE,
//! process_vm_writev) and userfaultfd's UFFDIO_COPY; and, for contrast, read(2), whose
//! copy to user space faults in kernel mode (a first touch the README counts).
//!
//! Touching such pages afterwards faults no more; a forked child's write to one is a copy
//! of a real page (`cow`), not the replacement of a zero page.

use std::path::Path;

use anyhow::{Context as _, bail};
use tamalloc_common::trace::FaultKind;

use super::{
    Outcome, PAGE, Truth, fork_child, madvise, no_thp, page, read, region, resident_count, skip,
    wait_ok, write_pages,
};

const GUP_PAGES: usize = 24;

/// Pages 0..8 populated by MADV_POPULATE_WRITE (GUP on the process's behalf: kernel mode
/// counts it, tracepoint mode cannot see it), 8..16 written by process_vm_writev to
/// ourselves (a remote GUP fault: counted by neither), 16..24 by read(2) from a pipe (a
/// kernel-mode fault: `write_zero`). Then all 24 read and written: no faults. Then a child
/// writes all 24: `cow`. Truth: bookkeeping; mincore: 24 resident before the touches.
pub fn gup(report: Option<&Path>) -> anyhow::Result<Outcome> {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    no_thp();
    let mut t = Truth::new(
        "gup",
        "bookkeeping: populate + read(2) fault, process_vm_writev is remote; mincore: 24 resident",
    );
    let base = region(GUP_PAGES)?;
    t.regions = 1;
    match madvise(base, 8, MADV_POPULATE_WRITE) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return skip(
                "gup",
                format!("MADV_POPULATE_WRITE: {e} (kernel before 5.14)"),
            );
        }
        Err(e) => return Err(e).context("madvise(MADV_POPULATE_WRITE)"),
    }
    // Kernel mode counts the kernel's fault on the process's behalf; tracepoint mode sees
    // no fault: its write_zero is read(2)'s 8 below. process_vm_writev's faults are remote
    // (FAULT_FLAG_REMOTE): neither mode counts them.
    t.add(FaultKind::WriteZero, 8);
    t.tracepoint("write_zero", 8);
    t.tracepoint("limit", super::NO_FAULT_LIMIT);
    let src = [0x33u8; PAGE];
    let local: Vec<libc::iovec> = (0..8)
        .map(|_| libc::iovec {
            iov_base: src.as_ptr() as *mut libc::c_void,
            iov_len: PAGE,
        })
        .collect();
    let remote: Vec<libc::iovec> = (8..16)
        .map(|i| libc::iovec {
            iov_base: page(base, i).cast(),
            iov_len: PAGE,
        })
        .collect();
    // SAFETY: both iovec arrays describe memory of this process that outlives the call.
    let n = unsafe {
        libc::process_vm_writev(libc::getpid(), local.as_ptr(), 8, remote.as_ptr(), 8, 0)
    };
    let remote_ok = n == (8 * PAGE) as isize;
    if !remote_ok {
        let e = std::io::Error::last_os_error();
        if n != -1 || e.raw_os_error() != Some(libc::ENOSYS) {
            bail!("process_vm_writev: {n}: {e}");
        }
        // No CROSS_MEMORY_ATTACH (the VM's tinyconfig): populate those pages too.
        madvise(page(base, 8), 8, MADV_POPULATE_WRITE).context("madvise(MADV_POPULATE_WRITE)")?;
        t.add(FaultKind::WriteZero, 8);
        t.info(
            "process_vm_writev",
            format!("{e}: pages 8..16 populated instead"),
        );
    }
    let mut fds = [0; 2];
    // SAFETY: a pipe, both ends closed below.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    for i in 16..GUP_PAGES {
        // SAFETY: one page through the pipe into a page of our region.
        let ok = unsafe {
            libc::write(fds[1], src.as_ptr().cast(), PAGE) == PAGE as isize
                && libc::read(fds[0], page(base, i).cast(), PAGE) == PAGE as isize
        };
        if !ok {
            bail!("pipe copy: {}", std::io::Error::last_os_error());
        }
        t.add(FaultKind::WriteZero, 1);
    }
    // SAFETY: our pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    let res = resident_count(base, GUP_PAGES)?;
    if res != GUP_PAGES as u64 {
        bail!("{res} of {GUP_PAGES} populated pages resident");
    }
    for i in 0..GUP_PAGES {
        let want = if i < 8 || (i < 16 && !remote_ok) {
            0
        } else {
            0x33
        };
        if read(base, i) != want {
            bail!("page {i} does not hold what was put there");
        }
    }
    write_pages(base, 0..GUP_PAGES);
    t.info("resident_before_touch", res);
    child_cows(report, "gup", base, GUP_PAGES, (16, super::NO_FAULT_LIMIT))?;
    t.emit(report)?;
    Ok(Outcome::Ran)
}

/// A child that writes `pages` pages its parent holds (all present): each a `cow`. The
/// first `unseen` became present without a fault tracepoint mode sees (`limit` says so in
/// README's words): it believes them empty and counts their copy as a zero page's.
fn child_cows(
    report: Option<&Path>,
    scenario: &'static str,
    base: *mut u8,
    pages: usize,
    (unseen, limit): (usize, &str),
) -> anyhow::Result<()> {
    let child = fork_child(|| {
        let mut c = Truth::new(scenario, "mincore in the child: all present (shared)");
        let res = resident_count(base, pages)?;
        if res != pages as u64 {
            bail!("the child has {res} of {pages} pages");
        }
        write_pages(base, 0..pages);
        c.add(FaultKind::Cow, pages as u64);
        c.tracepoint_limit(
            limit,
            &[
                (FaultKind::CowZero, unseen as u64),
                (FaultKind::Cow, (pages - unseen) as u64),
            ],
        );
        c.emit(report)
    })?;
    wait_ok(child)
}

// userfaultfd's uapi (linux/userfaultfd.h).
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

const UFFD_PAGES: usize = 16;

/// A region registered with userfaultfd (missing mode), filled by UFFDIO_COPY before any
/// touch: the kernel installs the pages, no fault happens. Reads and writes then fault no
/// more; a child's writes copy real pages (`cow`). Truth: bookkeeping; mincore: 16 resident
/// before any touch, and the pages hold the copied bytes.
pub fn uffd_copy(report: Option<&Path>) -> anyhow::Result<Outcome> {
    no_thp();
    let mut t = Truth::new(
        "uffd-copy",
        "bookkeeping: UFFDIO_COPY faults nothing; mincore: 16 resident, content copied",
    );
    let base = region(UFFD_PAGES)?;
    t.regions = 1;
    // SAFETY: userfaultfd(2) takes flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return skip(
            "uffd-copy",
            format!(
                "userfaultfd: {e} (needs CONFIG_USERFAULTFD, and root or vm.unprivileged_userfaultfd)"
            ),
        );
    }
    let fd = fd as libc::c_int;
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    let mut reg = UffdioRegister {
        start: base as u64,
        len: (UFFD_PAGES * PAGE) as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    let src = vec![0x44u8; UFFD_PAGES * PAGE];
    let mut copy = UffdioCopy {
        dst: base as u64,
        src: src.as_ptr() as u64,
        len: (UFFD_PAGES * PAGE) as u64,
        mode: 0,
        copy: 0,
    };
    // SAFETY: the uapi structs above, each the size its ioctl number encodes, live for the
    // calls; the registered range and the copy's destination are our region.
    unsafe {
        if libc::ioctl(fd, UFFDIO_API, &mut api) != 0 {
            bail!("UFFDIO_API: {}", std::io::Error::last_os_error());
        }
        if libc::ioctl(fd, UFFDIO_REGISTER, &mut reg) != 0 {
            bail!("UFFDIO_REGISTER: {}", std::io::Error::last_os_error());
        }
        if libc::ioctl(fd, UFFDIO_COPY, &mut copy) != 0 {
            bail!("UFFDIO_COPY: {}", std::io::Error::last_os_error());
        }
    }
    if copy.copy != (UFFD_PAGES * PAGE) as i64 {
        bail!("UFFDIO_COPY copied {} bytes", copy.copy);
    }
    let res = resident_count(base, UFFD_PAGES)?;
    if res != UFFD_PAGES as u64 {
        bail!("{res} of {UFFD_PAGES} copied pages resident");
    }
    for i in 0..UFFD_PAGES {
        if read(base, i) != 0x44 {
            bail!("page {i} does not hold the copied bytes");
        }
    }
    write_pages(base, 0..UFFD_PAGES);
    // SAFETY: our descriptor; the child must not inherit the registration's handler role.
    unsafe { libc::close(fd) };
    t.info("resident_before_touch", res);
    child_cows(
        report,
        "uffd-copy",
        base,
        UFFD_PAGES,
        (UFFD_PAGES, super::UNSEEN_PRESENT_LIMIT),
    )?;
    t.emit(report)?;
    Ok(Outcome::Ran)
}
