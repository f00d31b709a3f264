//! `tamalloc-bench workload`: a process that knows exactly which faults it causes in its
//! tamalloc regions, for checking the tracer. It touches a seeded random pattern (read-only,
//! write-first, read-then-write and untouched pages), forks a child that writes the pages
//! its parent left untouched and some of the others, unmaps part of a region, grows another
//! with mremap, touches memory outside regions, and prints one JSON line per process:
//! `{"type":"expect","pid":..,"read_zero":..,"write_zero":..,"cow_zero":..,"cow":..,
//! "other":0,"regions":..}`.

use std::{path::PathBuf, ptr};

use anyhow::{Context as _, bail};

use crate::output::emit;

#[derive(clap::Args)]
pub struct Args {
    /// Pages in the main region.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    pages: u64,
    /// Seed of the touch pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Append the expectation lines to this file instead of stdout.
    #[arg(long)]
    report: Option<PathBuf>,
}

const PAGE: usize = 4096;

#[derive(Default)]
struct Expect {
    read_zero: u64,
    write_zero: u64,
    cow_zero: u64,
    cow: u64,
    regions: u64,
}

impl Expect {
    fn line(&self) -> String {
        format!(
            "{{\"type\":\"expect\",\"pid\":{},\"read_zero\":{},\"write_zero\":{},\"cow_zero\":{},\"cow\":{},\"other\":0,\"regions\":{}}}\n",
            std::process::id(),
            self.read_zero,
            self.write_zero,
            self.cow_zero,
            self.cow,
            self.regions
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Touch {
    None,
    Read,
    Write,
    ReadWrite,
}

fn read(base: *mut u8, page: usize) {
    // SAFETY: `page` is inside a live mapping of the caller's.
    unsafe { ptr::read_volatile(base.add(page * PAGE)) };
}

fn write(base: *mut u8, page: usize) {
    // SAFETY: `page` is inside a live writable mapping of the caller's.
    unsafe { ptr::write_volatile(base.add(page * PAGE), 0x5a) };
}

/// A private anonymous read-write mapping of `len` bytes (at `addr` with `flags` if given).
pub(crate) fn mmap_plain(
    len: usize,
    addr: *mut libc::c_void,
    flags: libc::c_int,
) -> anyhow::Result<*mut u8> {
    // SAFETY: an anonymous mapping; the kernel validates every argument.
    let p = unsafe {
        libc::mmap(
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!("mmap: {}", std::io::Error::last_os_error());
    }
    Ok(p.cast())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // One fault per page: no transparent huge pages for this process.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let n = args.pages as usize;
    let mut rng = args.seed.max(1);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut exp = Expect::default();

    let a = tamalloc::alloc(n * PAGE).context("allocating region A")?;
    exp.regions += 1;
    let (a_ptr, a_len, _) = a.into_raw();
    let a_base = a_ptr.as_ptr();
    let pattern: Vec<Touch> = (0..n)
        .map(|_| match next() % 4 {
            0 => Touch::None,
            1 => Touch::Read,
            2 => Touch::Write,
            _ => Touch::ReadWrite,
        })
        .collect();
    for (page, t) in pattern.iter().enumerate() {
        match t {
            Touch::None => {}
            Touch::Read => {
                read(a_base, page);
                exp.read_zero += 1;
            }
            Touch::Write => {
                write(a_base, page);
                exp.write_zero += 1;
            }
            Touch::ReadWrite => {
                read(a_base, page);
                write(a_base, page);
                exp.read_zero += 1;
                exp.cow_zero += 1;
            }
        }
    }

    // Faults outside regions count for nothing: a plain mapping, and a MAP_NORESERVE one
    // that no 554 call announced.
    for flags in [0, libc::MAP_NORESERVE] {
        let p = mmap_plain(16 * PAGE, ptr::null_mut(), flags)?;
        for page in 0..16 {
            write(p, page);
        }
    }

    // A second, small region, written in full.
    let b = tamalloc::alloc(16 * PAGE).context("allocating region B")?;
    exp.regions += 1;
    let (b_ptr, _, _) = b.into_raw();
    for page in 0..16 {
        write(b_ptr.as_ptr(), page);
        exp.write_zero += 1;
    }

    let pages_of = |t: Touch| -> Vec<usize> {
        pattern
            .iter()
            .enumerate()
            .filter(|(_, x)| **x == t)
            .map(|(i, _)| i)
            .collect()
    };
    let untouched = pages_of(Touch::None);
    let read_only = pages_of(Touch::Read);
    let written = pages_of(Touch::Write);

    // SAFETY: this process is single-threaded here, so the child may run any code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if child == 0 {
        // Pages the parent never touched are not mapped in the child: first touches.
        let mut c = Expect::default();
        for &p in &untouched {
            write(a_base, p);
            c.write_zero += 1;
        }
        // Pages mapping the zero page, and pages shared copy-on-write.
        for &p in read_only.iter().take(8) {
            write(a_base, p);
            c.cow_zero += 1;
        }
        for &p in written.iter().take(8) {
            write(a_base, p);
            c.cow += 1;
        }
        let code = i32::from(emit(args.report.as_deref(), &c.line()).is_err());
        // SAFETY: leave without running the parent's exit handlers twice.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(child, &mut status, 0) } != child || status != 0 {
        bail!("the workload's child failed (status {status})");
    }

    // Since the fork the parent's written pages are write-protected: writing is a `cow`
    // fault, and writing a page that maps the zero page is a `cow_zero` fault.
    for &p in written.iter().take(8) {
        write(a_base, p);
        exp.cow += 1;
    }
    for &p in read_only.iter().skip(8).take(8) {
        write(a_base, p);
        exp.cow_zero += 1;
    }

    // Unmap the middle quarter of A, then touch its untouched pages outside the hole.
    let (hole_lo, hole_hi) = (n * 3 / 8, n * 5 / 8);
    // SAFETY: the range is inside region A, which this function owns.
    if unsafe {
        libc::munmap(
            a_base.add(hole_lo * PAGE).cast(),
            (hole_hi - hole_lo) * PAGE,
        )
    } != 0
    {
        bail!("munmap: {}", std::io::Error::last_os_error());
    }
    for &p in untouched.iter().filter(|&&p| p < hole_lo || p >= hole_hi) {
        write(a_base, p);
        exp.write_zero += 1;
    }
    // A plain mapping placed in the hole is not a region any more.
    // SAFETY: the address is inside the hole just unmapped.
    let hole = unsafe { a_base.add(hole_lo * PAGE) };
    let p = mmap_plain(8 * PAGE, hole.cast(), libc::MAP_FIXED_NOREPLACE)?;
    for page in 0..8 {
        write(p, page);
    }

    // Grow B with mremap (it may move): its old pages move along, still resident but
    // write-protected since the fork (`cow`); the new ones are first touches.
    // SAFETY: B is ours; the kernel validates the rest.
    let grown = unsafe {
        libc::mremap(
            b_ptr.as_ptr().cast(),
            16 * PAGE,
            32 * PAGE,
            libc::MREMAP_MAYMOVE,
        )
    };
    if grown == libc::MAP_FAILED {
        bail!("mremap: {}", std::io::Error::last_os_error());
    }
    let grown: *mut u8 = grown.cast();
    for page in 0..32 {
        write(grown, page);
        if page < 16 {
            exp.cow += 1;
        } else {
            exp.write_zero += 1;
        }
    }

    // MADV_DONTNEED drops pages: touching them again is a first touch again.
    let dropped: Vec<usize> = written
        .iter()
        .copied()
        .filter(|&p| (p < hole_lo || p >= hole_hi) && p < n - 4)
        .take(4)
        .collect();
    for &p in &dropped {
        // SAFETY: one page of region A, which this function owns.
        if unsafe { libc::madvise(a_base.add(p * PAGE).cast(), PAGE, libc::MADV_DONTNEED) } != 0 {
            bail!("madvise: {}", std::io::Error::last_os_error());
        }
        write(a_base, p);
        exp.write_zero += 1;
    }
    // A MAP_FIXED mapping over the last pages of A replaces them: no longer region pages.
    // SAFETY: the range is inside region A, which this function owns.
    let tail = unsafe { a_base.add((n - 4) * PAGE) };
    mmap_plain(4 * PAGE, tail.cast(), libc::MAP_FIXED)?;
    for page in 0..4 {
        // SAFETY: inside the mapping just made.
        write(unsafe { tail.add(page * PAGE) }, 0);
    }

    emit(args.report.as_deref(), &exp.line())?;
    // SAFETY: both ranges are ours and no longer used.
    unsafe {
        libc::munmap(a_base.cast(), a_len);
        libc::munmap(grown.cast(), 32 * PAGE);
    }
    Ok(())
}
