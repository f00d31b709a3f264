//! `tamalloc-bench burst`: many processes making many regions at once, the peak of control
//! events a ring must absorb (issue 14: 300 processes × 100 regions). Each child, released
//! together through a pipe, makes its regions (one page each), writes a byte to each, and
//! exits with them; the parent waits for all of them and prints what it caused.

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{
    output::emit,
    scenario::{fork_child, wait_ok},
};

#[derive(clap::Args)]
pub struct Args {
    /// Processes, forked up front and released together.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=4000))]
    procs: u32,
    /// Regions per process (one page each, each written once).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    regions: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut gate = [0; 2];
    // SAFETY: `gate` has room for the two descriptors pipe(2) returns.
    if unsafe { libc::pipe(gate.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let mut children = Vec::new();
    for _ in 0..args.procs {
        children.push(fork_child(|| {
            let mut b = 0u8;
            // SAFETY: reads one byte into `b`; returns 0 (EOF) once the parent closes the
            // write end, which releases every child at once.
            unsafe {
                libc::close(gate[1]);
                libc::read(gate[0], (&mut b as *mut u8).cast(), 1);
            }
            for _ in 0..args.regions {
                let mut r = tamalloc::alloc(4096).context("allocating a region")?;
                r.as_mut_slice()[0] = 1;
                // Left to the exit, as a short-lived process does (no munmap each).
                std::mem::forget(r);
            }
            Ok(())
        })?);
    }
    // SAFETY: closing our own descriptors; the children hold their copies.
    unsafe {
        libc::close(gate[0]);
        libc::close(gate[1]);
    }
    for pid in children {
        wait_ok(pid)?;
    }
    let (procs, regions) = (u64::from(args.procs), u64::from(args.regions));
    let line = json!({"type": "burst", "procs": procs, "regions": procs * regions,
                      "write_zero": procs * regions});
    emit(None, &format!("{line}\n"))
}
