//! `tamalloc trace --regions` (issue 14): an unmodified program's heap (sbrk), large calloc
//! and plain mmap, and ranges it names with prctl, each touched in a pattern the workload
//! knows page by page (`tamalloc-bench scenario anon|named`), traced with every fault
//! streamed; the rig's `check-ranges` asserts exactly those faults by kind in each range,
//! each in a region the trace says was made by `brk`, `mmap` or a name, and no drop.
//!
//! They load the real eBPF programs on the host kernel, so they need root; without it, they
//! fail with that message rather than pass.

use std::{
    path::Path,
    process::{Command, Output},
};

use serde_json::Value;

mod common;

use common::{TempDir, bin, by_type, json_lines, require_root, rig, succeeds};

/// One traced scenario: the trace's records, the tracer's output and `check-ranges`' stdout.
struct Traced {
    records: Vec<Value>,
    tracer: Output,
    checked: String,
    _dir: TempDir,
}

/// Traces `tamalloc-bench scenario SCENARIO` with `--regions REGIONS` (None: the default)
/// and runs `check-ranges` on what it left.
fn traced(regions: Option<&str>, scenario: &str) -> Traced {
    require_root();
    let dir = TempDir::new(&format!(
        "regions-{scenario}-{}",
        regions.unwrap_or("default")
    ));
    let (out, report) = (dir.arg("trace.jsonl"), dir.arg("expect.jsonl"));
    let mut tracer = Command::new(bin());
    tracer.args(["trace", "--quiet", "--output", &out]);
    if let Some(r) = regions {
        tracer.args(["--regions", r]);
    }
    tracer.args(["--", rig(), "scenario", scenario, "--report", &report]);
    let tracer = succeeds(tracer, "tamalloc trace");
    let records = json_lines(Path::new(&out));
    let mut check = Command::new(rig());
    check.args(["check-ranges", "--expect", &report, "--trace", &out]);
    let checked = match regions {
        Some(_) => String::from_utf8_lossy(&succeeds(check, "check-ranges").stdout).into_owned(),
        None => String::new(),
    };
    Traced {
        records,
        tracer,
        checked,
        _dir: dir,
    }
}

#[test]
fn anon_regions_count_an_unmodified_programs_heap_calloc_and_mmap_exactly() {
    let t = traced(Some("anon"), "anon");
    assert_eq!(by_type(&t.records, "meta")[0]["follows"], "anon");
    assert!(
        t.checked.contains("3 ranges match exactly"),
        "{}",
        t.checked
    );
}

/// The default follows tamalloc regions only: the same program has none, and its faults
/// are not counted.
#[test]
fn default_regions_ignore_an_unmodified_program() {
    let t = traced(None, "anon");
    assert_eq!(by_type(&t.records, "meta")[0]["follows"], "tamalloc");
    assert!(by_type(&t.records, "region").is_empty(), "no region");
    assert!(by_type(&t.records, "fault").is_empty(), "no fault");
}

/// `--regions name:arena` on a kernel that cannot name anonymous memory (the host: no
/// CONFIG_ANON_VMA_NAME) says so in one line and follows tamalloc regions only; the
/// scenario then skips, saying why. (Inside the patched kernels, which name memory,
/// tests/vm/scenarios.sh asserts the named ranges exactly.)
#[test]
fn named_regions_say_when_the_kernel_cannot_name_memory() {
    let t = traced(Some("name:arena"), "named");
    let err = String::from_utf8_lossy(&t.tracer.stderr);
    assert_eq!(by_type(&t.records, "meta")[0]["follows"], "name:arena");
    if err.contains("cannot name anonymous memory (no CONFIG_ANON_VMA_NAME)") {
        eprintln!(
            "SKIPPED: this kernel cannot name anonymous memory: {}",
            t.checked
        );
        assert!(t.checked.contains("skipped"), "{}", t.checked);
        assert!(
            by_type(&t.records, "region").is_empty(),
            "nothing named is followed"
        );
    } else {
        assert!(
            t.checked.contains("3 ranges match exactly"),
            "{}",
            t.checked
        );
    }
}
