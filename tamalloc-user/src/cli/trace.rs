//! `tamalloc trace`.

use anyhow::Context as _;
use tamalloc::tracer::{Probe, ProbeOptions};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let probe = Probe::load(&ProbeOptions::default()).context("starting the tracer")?;
    std::thread::sleep(std::time::Duration::from_secs(5));
    for (pid, c) in probe.counters()? {
        println!("{pid} {c:?}");
    }
    Ok(())
}
