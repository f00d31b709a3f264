//! Recordings (`tamalloc record`, `trace --record`) against the workload rigs, on the host
//! kernel: a recording converts, byte for byte, to what the live exporters of the same
//! session wrote, and a burst of processes and regions fits the default ring.
//!
//! The same-session design: `trace --output FILE --format F --record REC` writes the live
//! export and the recording from one session's records, so `tamalloc report REC --format F
//! -o OUT` must give the very same file (every record equal, in order, timestamps and pids
//! included), not merely a similar trace of another run.
//!
//! These tests load eBPF programs, so they need root (CI runs as root); without it they
//! fail with that message rather than pass silently.

use std::{path::Path, process::Command, time::Instant};

mod common;

use common::{TempDir, bin, by_type, json_lines, require_root, rig, succeeds, trace_workload};

fn report(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin());
    cmd.arg("report").args(args);
    succeeds(cmd, "tamalloc report")
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn record_converts_to_exactly_what_each_live_exporter_wrote() {
    require_root();
    let dir = TempDir::new("record-same");
    for format in ["jsonl", "csv", "perfetto", "chrome-json"] {
        let live = dir.arg(&format!("live.{format}"));
        let rec = dir.arg(&format!("{format}.tamrec"));
        let conv = dir.arg(&format!("conv.{format}"));
        let expect = dir.arg(&format!("expect-{format}.jsonl"));
        // The rig forks, munmaps, mremaps and runs a thread: every kind of record.
        trace_workload(
            &[
                "--quiet",
                "--interval",
                "50ms",
                "--output",
                &live,
                "--format",
                format,
            ]
            .into_iter()
            .chain(["--record", &rec])
            .collect::<Vec<_>>(),
            &expect,
        );
        report(&[&rec, "--format", format, "-o", &conv]);
        let (a, b) = (read(&live), read(&conv));
        assert!(a.len() > 1000, "{format}: a real trace ({} bytes)", a.len());
        assert!(
            a == b,
            "{format}: the conversion differs from the live export"
        );
        if format == "jsonl" {
            let records = json_lines(Path::new(&conv));
            for ty in [
                "meta",
                "region",
                "fault",
                "fork",
                "unmap",
                "remap",
                "exit",
                "summary",
                "region_summary",
            ] {
                assert!(!by_type(&records, ty).is_empty(), "no {ty} record");
            }
            assert_eq!(
                records.last().map(|r| r["type"].clone()),
                Some("drops".into())
            );
            // And the recording's counts are the workload's, exactly.
            let mut check = Command::new(rig());
            check.args(["check-trace", "--expect", &expect, "--trace", &conv]);
            succeeds(check, "tamalloc-bench check-trace");
        }
    }
}

/// 300 processes × 100 regions (one page each, written), released at once, at the default
/// ring: no event is dropped. Once here; `cargo xtask bench` runs it ten times.
#[test]
fn record_burst_of_300_processes_by_100_regions_drops_nothing() {
    require_root();
    let dir = TempDir::new("record-burst");
    let rec = dir.arg("burst.tamrec");
    let started = Instant::now();
    let mut cmd = Command::new(bin());
    cmd.args(["record", "-o", &rec, "--", rig(), "burst"])
        .args(["--procs", "300", "--regions", "100"]);
    succeeds(cmd, "tamalloc record");
    let elapsed = started.elapsed();
    let out = dir.arg("burst.jsonl");
    report(&[&rec, "--format", "jsonl", "-o", &out]);
    let records = json_lines(Path::new(&out));
    let drops = records.last().expect("records");
    assert_eq!(drops["type"], "drops");
    assert_eq!(drops["count"], 0, "{drops}");
    assert_eq!(by_type(&records, "region").len(), 30_000);
    assert_eq!(by_type(&records, "fault").len(), 30_000);
    let summaries = by_type(&records, "summary");
    let total: u64 = summaries
        .iter()
        .filter_map(|s| s["write_zero"].as_u64())
        .sum();
    assert_eq!(total, 30_000);
    assert!(elapsed.as_secs() < 60, "the burst took {elapsed:?}");
}
