use anyhow::Context as _;
use tamalloc::tracer::{Probe, ProbeOptions};

fn main() {
    if let Err(err) = run() {
        eprintln!("tamalloc: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let probe = Probe::load(&ProbeOptions::default()).context("starting the tracer")?;
    std::thread::sleep(std::time::Duration::from_secs(5));
    for (pid, c) in probe.counters()? {
        println!("{pid} {c:?}");
    }
    println!("{:?}", probe.drops()?);
    Ok(())
}
