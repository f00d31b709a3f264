//! The tracer's two modes on the host kernel: each one this kernel offers counts the
//! workload exactly, the mode is said in the header and in the `meta` record, and when
//! kernel mode is not available `auto` falls back with a one-line reason and `--mode kernel`
//! fails with it. The other tracer tests run in `auto` (kernel mode where the kernel offers
//! it); `TAMALLOC_TRACE_MODE=tracepoint cargo test` runs them all in tracepoint mode.
//!
//! These tests load eBPF programs, so they need root.

use std::process::Command;

mod common;

use common::{TempDir, bin, by_type, json_lines, require_root, rig, succeeds, trace_workload};

/// Whether this kernel runs kernel mode: `None` when it does, else the tracer's reason.
fn kernel_mode_refusal() -> Option<String> {
    let out = Command::new(bin())
        .args(["trace", "--mode", "kernel", "--quiet", "--", "true"])
        .output()
        .expect("run tamalloc trace --mode kernel");
    if out.status.success() {
        return None;
    }
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("kernel mode is not available: "),
        "--mode kernel failed for another reason: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    Some(err)
}

fn exact_in(mode: &str) {
    let dir = TempDir::new(&format!("mode-{mode}"));
    let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
    let run = trace_workload(
        &[
            "--quiet",
            "--mode",
            mode,
            "--output",
            out.to_str().expect("utf-8"),
        ],
        report.to_str().expect("utf-8"),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("({mode} mode)")),
        "header names the mode: {stderr}"
    );
    assert!(
        !stderr.contains("tamalloc: tracepoint mode:"),
        "no fallback note when the mode was asked for: {stderr}"
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["type"], "meta");
    assert_eq!(records[0]["mode"], mode);
    let mut check = Command::new(rig());
    check
        .arg("check-trace")
        .arg("--expect")
        .arg(&report)
        .arg("--trace")
        .arg(&out);
    succeeds(check, "tamalloc-bench check-trace");
    let drops = by_type(&records, "drops");
    assert_eq!(drops[0]["count"], 0, "{:?}", drops[0]);
}

#[test]
fn tracepoint_mode_counts_exactly_when_forced() {
    require_root();
    exact_in("tracepoint");
}

#[test]
fn kernel_mode_counts_exactly_or_auto_says_why_not() {
    require_root();
    match kernel_mode_refusal() {
        None => exact_in("kernel"),
        Some(why) => {
            // Not skipped: the fallback is what this kernel gets, so check it.
            eprintln!("kernel mode unavailable on this kernel, checking the fallback: {why}");
            let dir = TempDir::new("mode-auto");
            let (out, report) = (dir.path("trace.jsonl"), dir.path("expect.jsonl"));
            let run = trace_workload(
                &["--quiet", "--output", out.to_str().expect("utf-8")],
                report.to_str().expect("utf-8"),
            );
            let stderr = String::from_utf8_lossy(&run.stderr);
            let note = stderr
                .lines()
                .find(|l| l.starts_with("tamalloc: tracepoint mode: "))
                .unwrap_or_else(|| panic!("auto says why it fell back: {stderr}"));
            assert!(why.contains(note.trim_start_matches("tamalloc: tracepoint mode: ")));
            assert!(stderr.contains("(tracepoint mode)"), "{stderr}");
            assert_eq!(json_lines(&out)[0]["mode"], "tracepoint");
        }
    }
}
