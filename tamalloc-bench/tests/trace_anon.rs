//! `tamalloc trace --regions anon` (issue 14): an unmodified program's heap (sbrk), large
//! calloc and plain mmap, each touched in a pattern the workload knows page by page
//! (`tamalloc-bench scenario anon`), traced with every fault streamed; the rig's
//! `check-ranges` asserts exactly those faults by kind in each range, each in a region the
//! trace says was made by `brk` or `mmap`, and no drop.
//!
//! It loads the real eBPF programs on the host kernel, so it needs root; without it, it
//! fails with that message rather than pass.

use std::{path::Path, process::Command};

mod common;

use common::{TempDir, bin, by_type, json_lines, require_root, rig, succeeds};

#[test]
fn anon_regions_count_an_unmodified_programs_heap_calloc_and_mmap_exactly() {
    require_root();
    let dir = TempDir::new("anon");
    let (out, report) = (dir.arg("trace.jsonl"), dir.arg("expect.jsonl"));
    let mut tracer = Command::new(bin());
    tracer.args([
        "trace",
        "--quiet",
        "--regions",
        "anon",
        "--output",
        &out,
        "--",
        rig(),
        "scenario",
        "anon",
        "--report",
        &report,
    ]);
    succeeds(tracer, "tamalloc trace --regions anon");
    let records = json_lines(Path::new(&out));
    assert_eq!(by_type(&records, "meta")[0]["follows"], "anon");
    let mut check = Command::new(rig());
    check.args(["check-ranges", "--expect", &report, "--trace", &out]);
    let done = succeeds(check, "tamalloc-bench check-ranges");
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("3 ranges match exactly"),
        "{}",
        String::from_utf8_lossy(&done.stdout)
    );
}

/// The default follows tamalloc regions only: the same program has none, and its faults
/// are not counted.
#[test]
fn default_regions_ignore_an_unmodified_program() {
    require_root();
    let dir = TempDir::new("anon-default");
    let (out, report) = (dir.arg("trace.jsonl"), dir.arg("expect.jsonl"));
    let mut tracer = Command::new(bin());
    tracer.args([
        "trace",
        "--quiet",
        "--output",
        &out,
        "--",
        rig(),
        "scenario",
        "anon",
        "--report",
        &report,
    ]);
    succeeds(tracer, "tamalloc trace");
    let records = json_lines(Path::new(&out));
    assert_eq!(by_type(&records, "meta")[0]["follows"], "tamalloc");
    assert!(by_type(&records, "region").is_empty(), "no region");
    assert!(by_type(&records, "fault").is_empty(), "no fault");
}

/// `--regions name:arena` on a kernel that cannot name anonymous memory (the host: no
/// CONFIG_ANON_VMA_NAME) says so in one line and follows tamalloc regions only; the
/// scenario then skips, saying why. (Inside the patched kernels, which name memory,
/// tests/vm/scenarios.sh asserts the named ranges exactly.)
#[test]
fn named_regions_say_when_the_kernel_cannot_name_memory() {
    require_root();
    let dir = TempDir::new("named");
    let (out, report) = (dir.arg("trace.jsonl"), dir.arg("expect.jsonl"));
    let mut tracer = Command::new(bin());
    tracer.args([
        "trace",
        "--quiet",
        "--regions",
        "name:arena",
        "--output",
        &out,
        "--",
        rig(),
        "scenario",
        "named",
        "--report",
        &report,
    ]);
    let done = succeeds(tracer, "tamalloc trace --regions name:arena");
    let err = String::from_utf8_lossy(&done.stderr);
    let names_memory = !err.contains("cannot name anonymous memory (no CONFIG_ANON_VMA_NAME)");
    let records = json_lines(Path::new(&out));
    assert_eq!(by_type(&records, "meta")[0]["follows"], "name:arena");
    let mut check = Command::new(rig());
    check.args(["check-ranges", "--expect", &report, "--trace", &out]);
    let checked = String::from_utf8_lossy(&succeeds(check, "check-ranges").stdout).into_owned();
    if names_memory {
        assert!(checked.contains("3 ranges match exactly"), "{checked}");
    } else {
        eprintln!("SKIPPED: this kernel cannot name anonymous memory: {checked}");
        assert!(checked.contains("skipped"), "{checked}");
        assert!(
            by_type(&records, "region").is_empty(),
            "nothing named is followed"
        );
    }
}
