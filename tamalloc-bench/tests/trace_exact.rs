//! The tracer (`tamalloc trace`) against workloads that know their own faults
//! (`tamalloc-bench workload`), on the host kernel.
//!
//! These tests load eBPF programs, so they need root (CI runs as root); without it they
//! fail with that message rather than pass silently. The kernel here has no syscall 554,
//! so the workloads use the documented mmap fallback.

use std::{path::Path, process::Command};

use serde_json::Value;

mod common;

use common::{
    KINDS, TempDir, bin, by_type, json_lines, require_root, rig, succeeds, trace, trace_workload,
};

/// Every process the workload reports must have a summary with exactly its counts; the
/// rig's own `check-trace` does the comparison (it also runs inside the VM).
fn assert_exact(expect: &Path, trace: &Path) {
    let mut check = Command::new(rig());
    check
        .arg("check-trace")
        .arg("--expect")
        .arg(expect)
        .arg("--trace")
        .arg(trace);
    succeeds(check, "tamalloc-bench check-trace");
}

#[test]
fn trace_counts_every_kind_exactly_across_fork_munmap_and_mremap() {
    require_root();
    let dir = TempDir::new("exact");
    let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
    trace_workload(
        &["--quiet", "--output", out.to_str().expect("utf-8 path")],
        report.to_str().expect("utf-8"),
    );
    let expect = json_lines(&report);
    let records = json_lines(&out);
    assert_eq!(expect.len(), 2, "parent and child report");
    assert_exact(&report, &out);

    // The streamed fault records agree with the counters (nothing was dropped here).
    let drops = by_type(&records, "drops");
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0]["count"], 0, "{:?}", drops[0]);
    for e in &expect {
        let pid = &e["pid"];
        for k in &KINDS {
            let n = by_type(&records, "fault")
                .iter()
                .filter(|f| &f["pid"] == pid && f["kind"] == *k)
                .count() as u64;
            assert_eq!(
                Some(n),
                e[*k].as_u64(),
                "pid {pid}: fault records of kind {k}"
            );
        }
    }
    // Regions are reported with the fallback flag, and every fault names its region.
    let regions = by_type(&records, "region");
    assert_eq!(regions.len(), 2);
    assert!(regions.iter().all(|r| r["fallback"] == true));
    let first = &records[0];
    assert_eq!(first["type"], "meta");
    assert_eq!(
        records.last().map(|r| &r["type"]),
        Some(&Value::from("drops"))
    );
}

#[test]
fn trace_keeps_two_processes_apart() {
    require_root();
    let dir = TempDir::new("two");
    let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
    let script = format!(
        "{b} workload --seed 3 --report {r} & {b} workload --seed 11 --pages 512 --report {r}; wait",
        b = rig(),
        r = report.display()
    );
    trace(
        &["--quiet", "--output", out.to_str().expect("utf-8")],
        &["sh", "-c", &script],
    );
    assert_eq!(json_lines(&report).len(), 4, "two parents and two children");
    assert_exact(&report, &out);
}

#[test]
fn trace_reuses_the_room_of_exited_processes() {
    require_root();
    let dir = TempDir::new("slots");
    let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
    // Each workload is a parent and a forked child with regions: room for exactly one run at
    // a time, so runs 2..4 count only if the tracer gave back the room of the runs before.
    let script = format!(
        "for s in 1 2 3 4; do {b} workload --seed $s --pages 256 --report {r}; sleep 0.5; done",
        b = rig(),
        r = report.display()
    );
    trace(
        &[
            "--quiet",
            "--max-procs",
            "2",
            "--output",
            out.to_str().expect("utf-8"),
        ],
        &["sh", "-c", &script],
    );
    assert_eq!(
        json_lines(&report).len(),
        8,
        "four parents and four children"
    );
    let records = json_lines(&out);
    let drops = by_type(&records, "drops");
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0]["map_full"].as_u64(), Some(0), "{:?}", drops[0]);
    assert_exact(&report, &out);
}

#[test]
fn trace_counts_stay_exact_when_a_tiny_ring_drops_events() {
    require_root();
    let dir = TempDir::new("drops");
    let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
    trace(
        &[
            "--quiet",
            "--ring-size",
            "4KiB",
            "--output",
            out.to_str().expect("utf-8"),
        ],
        &[
            rig(),
            "workload",
            "--pages",
            "65536",
            "--report",
            report.to_str().expect("utf-8"),
        ],
    );
    let records = json_lines(&out);
    let drops = by_type(&records, "drops");
    assert_eq!(drops.len(), 1);
    let lost = drops[0]["fault_events"].as_u64().expect("fault_events");
    assert!(
        lost > 0,
        "a 4 KiB ring cannot hold the events of 65536 pages: {:?}",
        drops[0]
    );
    assert_eq!(
        drops[0]["count"].as_u64(),
        Some(
            lost + drops[0]["control_events"].as_u64().unwrap_or(0)
                + drops[0]["map_full"].as_u64().unwrap_or(0)
        )
    );
    // Counting never depends on the ring.
    assert_exact(&report, &out);
}

#[test]
fn trace_summary_is_printed_without_output_file() {
    require_root();
    let dir = TempDir::new("plain");
    let report = dir.path("expect.jsonl");
    let out = trace(
        &["--interval", "50ms"],
        &[
            rig(),
            "workload",
            "--report",
            report.to_str().expect("utf-8"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Summary after"), "{stdout}");
    assert!(stdout.contains("READ_ZERO"), "{stdout}");
    for e in json_lines(&report) {
        let pid = e["pid"].to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(pid.as_str())),
            "no row for pid {pid} in:\n{stdout}"
        );
    }
}

/// Waits for the tracer's "Attached ..." line on stderr; returns the rest of stderr's reader.
fn wait_attached(child: &mut std::process::Child) -> std::io::BufReader<std::process::ChildStderr> {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("piped stderr");
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read the tracer's stderr");
    assert!(
        line.starts_with("Attached "),
        "unexpected first line: {line:?}"
    );
    reader
}

#[test]
fn trace_comm_filter_and_sigint_leave_a_complete_file() {
    require_root();
    let dir = TempDir::new("comm");
    let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
    // The same workload under another command name must not be learned.
    let other = dir.path("othername");
    std::fs::copy(rig(), &other).expect("copy the binary");
    let mut tracer = Command::new(bin())
        .args(["trace", "--quiet", "--comm", "tamalloc-bench", "--output"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tamalloc trace");
    let _stderr = wait_attached(&mut tracer);
    for (exe, seed) in [(rig(), "5"), (other.to_str().expect("utf-8"), "6")] {
        let status = Command::new(exe)
            .args(["workload", "--seed", seed, "--report"])
            .arg(&report)
            .status()
            .expect("run a workload");
        assert!(status.success());
    }
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) }, 0);
    let status = tracer.wait().expect("wait for the tracer");
    assert!(
        status.success(),
        "the tracer ends cleanly on SIGINT: {status}"
    );

    let records = json_lines(&out);
    assert_eq!(
        records.last().map(|r| &r["type"]),
        Some(&Value::from("drops"))
    );
    // The workloads ran one after the other: the first two lines are `tamalloc-bench`'s child
    // and parent, the last two `othername`'s, which must not appear at all.
    let expect = json_lines(&report);
    assert_eq!(expect.len(), 4);
    let (ours, theirs) = expect.split_at(2);
    let summaries = by_type(&records, "summary");
    for e in theirs {
        assert!(
            summaries.iter().all(|s| s["pid"] != e["pid"]),
            "othername (pid {}) was traced: {summaries:?}",
            e["pid"]
        );
    }
    let mine = dir.path("mine.jsonl");
    let lines: String = ours.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&mine, lines).expect("write expectations");
    assert_exact(&mine, &out);
}
