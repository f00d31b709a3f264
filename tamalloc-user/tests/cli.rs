//! The `tamalloc` command: output formats, exit codes and one-line errors.

use std::process::{Command, Output};

use serde_json::Value;

fn tamalloc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tamalloc"))
        .args(args)
        .output()
        .expect("running tamalloc")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = tamalloc(args);
    assert!(
        o.status.success(),
        "tamalloc {args:?} failed: {}",
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with exactly one line on stderr; returns that line.
fn fails(args: &[&str]) -> String {
    let o = tamalloc(args);
    assert!(!o.status.success(), "tamalloc {args:?} should fail");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr for {args:?}: {err:?}");
    assert!(lines[0].starts_with("tamalloc: "), "{err:?}");
    lines[0].to_owned()
}

const PROC_FIELDS: [&str; 13] = [
    "pid",
    "oom_score",
    "oom_score_adj",
    "resident_permille",
    "vm_size_kib",
    "vm_rss_kib",
    "rss_anon_kib",
    "rss_file_kib",
    "rss_shmem_kib",
    "tamalloc_regions",
    "tamalloc_reserved_kib",
    "tamalloc_resident_kib",
    "comm",
];

fn check_proc_record(v: &Value) {
    for f in PROC_FIELDS {
        assert!(v.get(f).is_some(), "{f} missing in {v}");
    }
    assert!(v["comm"].is_string(), "{v}");
    assert!(v["pid"].as_i64().is_some_and(|p| p > 0), "{v}");
    assert!(v["oom_score_adj"].is_i64(), "{v}");
    for f in &PROC_FIELDS[3..12] {
        assert!(v[f].is_u64(), "{f} in {v}");
    }
    assert!(
        matches!(v["source"].as_str(), Some("syscall" | "procfs")),
        "{v}"
    );
}

#[test]
fn stats_json_lines_have_the_documented_fields() {
    let out = ok(&["stats", "--json"]);
    let me = i64::from(std::process::id());
    let mut seen_me = false;
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        check_proc_record(&v);
        seen_me |= v["pid"] == me;
    }
    assert!(seen_me, "this test process is listed");
}

#[test]
fn stats_of_one_pid_is_one_line() {
    let me = std::process::id().to_string();
    let out = ok(&["stats", &me, "--json"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: Value = serde_json::from_str(lines[0]).expect("JSON");
    check_proc_record(&v);
    assert_eq!(v["pid"].to_string(), me);
}

#[test]
fn stats_sort_rss_is_largest_first() {
    let out = ok(&["stats", "--json", "--sort", "rss"]);
    let rss: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON")["vm_rss_kib"]
                .as_u64()
                .expect("vm_rss_kib")
        })
        .collect();
    assert!(!rss.is_empty());
    assert!(rss.windows(2).all(|w| w[0] >= w[1]), "{rss:?}");
}

#[test]
fn stats_table_has_stable_columns() {
    let me = std::process::id().to_string();
    let out = ok(&["stats", &me]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0] == "# source: /proc (this kernel has no syscall 555)"
            || lines[0] == "# source: syscall 555 (get_memory_usage_stats)",
        "{out}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header.join(" "),
        "PID COMM VSZ RSS ANON FILE SHMEM OOM ADJ RES% TA-REGIONS TA-RESERVED TA-RESIDENT"
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row.len(), 13, "{}", lines[2]);
    assert_eq!(row[0], me);
    assert!(row[2].ends_with("iB"), "VSZ in human units: {}", row[2]);
    assert!(
        row[9].parse::<f64>().is_ok(),
        "RES% is a number: {}",
        row[9]
    );
}

#[test]
fn stats_unknown_pid_is_one_clear_line() {
    assert_eq!(
        fails(&["stats", "999999999"]),
        "tamalloc: process 999999999 not found (ESRCH)"
    );
}

#[test]
fn global_json_and_table() {
    let out = ok(&["global", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert!(v["nr_processes"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert!(v["mem_total_kib"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert!(matches!(v["source"].as_str(), Some("syscall" | "procfs")));
    let table = ok(&["global"]);
    assert!(table.starts_with("source:"), "{table}");
    assert!(table.contains("MemTotal:"), "{table}");
}

fn demo_summary(args: &[&str]) -> Value {
    let out = ok(args);
    let last = out.lines().last().expect("output");
    let v: Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(v["type"], "demo");
    assert_eq!(
        out.lines().filter(|l| l.starts_with('{')).count(),
        1,
        "exactly one JSON line: {out}"
    );
    v
}

#[test]
fn demo_counts_plain_writes() {
    let v = demo_summary(&["demo", "--size", "64KiB", "--rate", "0"]);
    assert_eq!(v["len"], 65536);
    assert_eq!(v["pages"], 16);
    assert_eq!(v["write_zero"], 16);
    assert_eq!(v["read_zero"], 0);
    assert_eq!(v["cow_zero"], 0);
    assert_eq!(v["cow"], 0);
    assert_eq!(v["other"], 0);
    assert!(matches!(v["path"].as_str(), Some("syscall" | "fallback")));
    assert!(v["addr"].as_u64().is_some_and(|a| a % 4096 == 0));
    assert!(v["pid"].as_u64().is_some());
}

#[test]
fn demo_counts_read_first_random_half() {
    let v = demo_summary(&[
        "demo",
        "--size",
        "100000",
        "--rate",
        "0",
        "--touch",
        "50%",
        "--pattern",
        "random",
        "--read-first",
        "--seed",
        "42",
    ]);
    // 100000 bytes = 25 pages; 50% rounds to 13.
    assert_eq!(v["pages"], 25);
    assert_eq!(v["read_zero"], 13);
    assert_eq!(v["cow_zero"], 13);
    assert_eq!(v["write_zero"], 0);
}

#[test]
fn demo_touch_zero_touches_nothing() {
    let v = demo_summary(&["demo", "--size", "8KiB", "--rate", "0", "--touch", "0%"]);
    assert_eq!(v["write_zero"], 0);
    assert_eq!(v["pages"], 2);
}

#[test]
fn bad_arguments_fail_with_one_line() {
    let l = fails(&["demo", "--size", "0"]);
    assert!(l.contains("--size") && l.contains("at least 1 byte"), "{l}");
    let l = fails(&["demo", "--touch", "150%"]);
    assert!(l.contains("between 0% and 100%"), "{l}");
    let l = fails(&["demo", "--size", "garbage"]);
    assert!(l.contains("'garbage'"), "{l}");
    let l = fails(&["demo", "--rate", "fast"]);
    assert!(l.contains("--rate"), "{l}");
    let l = fails(&["stats", "0"]);
    assert!(l.contains("PIDS"), "{l}");
    let l = fails(&["compare", "--touch", "101%"]);
    assert!(l.contains("--touch"), "{l}");
}

#[test]
fn help_is_not_an_error() {
    let out = ok(&["demo", "--help"]);
    assert!(out.contains("--read-first"), "{out}");
    let out = ok(&["--help"]);
    assert!(
        !out.contains("compare-child"),
        "the child subcommand is hidden: {out}"
    );
}

#[test]
fn compare_json_parses() {
    let out = ok(&["compare", "--size", "8MiB", "--json"]);
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let methods: Vec<&str> = rows.iter().filter_map(|r| r["method"].as_str()).collect();
    assert_eq!(
        methods,
        ["malloc", "malloc-memset", "calloc", "mmap", "tamalloc"]
    );
    let size_kib = 8 * 1024;
    for r in &rows {
        assert_eq!(r["type"], "compare");
        assert_eq!(r["size"], 8 << 20);
        assert_eq!(r["touched_pages"], 205, "10% of 2048 pages");
        for f in [
            "alloc_ns",
            "touch_ns",
            "vm_size_alloc_kib",
            "vm_rss_alloc_kib",
            "vm_size_touch_kib",
            "vm_rss_touch_kib",
        ] {
            assert!(r[f].is_i64() || r[f].is_u64(), "{f} in {r}");
        }
        assert_eq!(
            r["read_zero"], true,
            "fresh large allocations read zero: {r}"
        );
    }
    let by = |m: &str| rows.iter().find(|r| r["method"] == m).expect("method");
    for lazy in ["mmap", "tamalloc"] {
        let r = by(lazy);
        assert!(
            r["vm_size_alloc_kib"].as_i64().unwrap_or(0) >= size_kib,
            "{r}"
        );
        assert!(
            r["vm_rss_alloc_kib"].as_i64().unwrap_or(i64::MAX) < size_kib / 2,
            "{r}"
        );
        assert_eq!(r["zero_guaranteed"], true);
    }
    let memset = by("malloc-memset");
    assert!(
        memset["vm_rss_alloc_kib"].as_i64().unwrap_or(0) >= size_kib * 9 / 10,
        "{memset}"
    );
    assert_eq!(by("malloc")["zero_guaranteed"], false);
    assert!(matches!(
        by("tamalloc")["path"].as_str(),
        Some("syscall" | "fallback")
    ));
}

#[test]
fn compare_table_has_the_three_verdict_columns() {
    let out = ok(&["compare", "--size", "4MiB", "--touch", "0%"]);
    assert!(out.contains("ZERO-INIT"), "{out}");
    assert!(out.contains("VMSIZE AT ONCE"), "{out}");
    assert!(out.contains("VMRSS AT ONCE"), "{out}");
    for m in ["malloc ", "malloc+memset", "calloc", "mmap", "tamalloc"] {
        assert!(out.lines().any(|l| l.starts_with(m)), "{m}: {out}");
    }
}
