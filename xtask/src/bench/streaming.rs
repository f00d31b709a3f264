//! Part 3: drops when `tamalloc trace --events` streams at full speed, and the userspace
//! decoder's speed (criterion).

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::Context as _;

use super::{
    data::{BurstRun, Decode, DropRun},
    plan::{BURST_PROCS, BURST_REGIONS, Bins, decode_secs, faults_args},
    process::{Spawned, tail},
    records::{self, Benchmark, Estimates},
};
use crate::util;

/// `tamalloc trace --events` with 2 threads, stdout to a file, for the closing `drops:` line.
pub fn drops(bins: &Bins, work: &Path, rounds: u32) -> anyhow::Result<Vec<DropRun>> {
    let mut out = Vec::new();
    for round in 0..rounds {
        let report = work.join(format!("stream-{round}.json"));
        let stdout_path = work.join("stream-stdout.txt");
        let stdout = fs::File::create(&stdout_path).context("creating the stdout file")?;
        let mut c = Spawned::spawn(
            Command::new(&bins.tamalloc)
                .args(["trace", "--events", "--"])
                .arg(&bins.bench)
                .args(faults_args(2, &report))
                .stdout(stdout)
                .stderr(Stdio::null()),
        )?;
        c.wait_ok("tamalloc trace --events")?;
        let rec = records::faults_report(&report)?;
        // The summary is at the end: read only the tail of a large file.
        let text = tail(&stdout_path, 64 << 10)?;
        let _ = fs::remove_file(&stdout_path);
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with("drops:"))
            .context("no `drops:` line in the trace's summary")?;
        let (drops, fault_events) = parse_drops(line);
        out.push(DropRun {
            faults_per_sec: rec.faults_per_sec,
            drops,
            fault_events,
        });
    }
    Ok(out)
}

/// "drops: N (fault events F, control events C, map full M)" → (N, F).
pub fn parse_drops(line: &str) -> (u64, u64) {
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    )
}

/// `tamalloc record -- tamalloc-bench burst` (300 processes × 100 regions at once), `runs`
/// times, at the default ring: the drops of each, from the closing `drops:` line.
pub fn bursts(bins: &Bins, work: &Path, runs: u32) -> anyhow::Result<Vec<BurstRun>> {
    let (procs, regions) = (BURST_PROCS, BURST_REGIONS);
    let mut out = Vec::new();
    for _ in 0..runs {
        let file = work.join("burst.tamrec");
        let summary = work.join("burst-summary.txt");
        let stdout = fs::File::create(&summary).context("creating the summary file")?;
        let started = std::time::Instant::now();
        let mut c = Spawned::spawn(
            Command::new(&bins.tamalloc)
                .args(["record", "-o"])
                .arg(&file)
                .arg("--")
                .arg(&bins.bench)
                .args(["burst", "--procs", &procs.to_string()])
                .args(["--regions", &regions.to_string()])
                .stdout(stdout)
                .stderr(Stdio::null()),
        )?;
        c.wait_ok("tamalloc record -- tamalloc-bench burst")?;
        let elapsed_s = started.elapsed().as_secs_f64();
        // The `drops:` line comes before the regions table: 300 processes' worth (200 KB).
        let text = tail(&summary, 4 << 20)?;
        let _ = fs::remove_file(&file);
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with("drops:"))
            .context("no `drops:` line in the recording's summary")?;
        out.push(BurstRun {
            procs,
            regions,
            drops: parse_drops(line).0,
            elapsed_s,
        });
    }
    Ok(out)
}

/// `cargo bench --bench decode`, then criterion's median from its estimates.
pub fn decode(quick: bool) -> anyhow::Result<Decode> {
    util::run(util::cargo().args([
        "bench",
        "--quiet",
        "-p",
        "tamalloc-user",
        "--bench",
        "decode",
        "--",
        "--noplot",
        "--warm-up-time",
        "1",
        "--measurement-time",
        &decode_secs(quick).to_string(),
    ]))?;
    let dir = util::target_dir().join("criterion/decode/decode_apply");
    let read = |name: &str| {
        let path = dir.join("new").join(name);
        fs::read_to_string(&path).with_context(|| format!("reading criterion's {}", path.display()))
    };
    let est: Estimates =
        serde_json::from_str(&read("estimates.json")?).context("criterion's estimates.json")?;
    let bench: Benchmark =
        serde_json::from_str(&read("benchmark.json")?).context("criterion's benchmark.json")?;
    let events = bench
        .throughput
        .and_then(|t| t.elements)
        .context("no element count in criterion's benchmark.json")?;
    Ok(Decode {
        events,
        median_ns: est.median.point_estimate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_line_is_parsed() {
        assert_eq!(
            parse_drops("drops: 12 (fault events 10, control events 2, map full 0)"),
            (12, 10)
        );
        assert_eq!(parse_drops("drops: 0"), (0, 0));
    }
}
