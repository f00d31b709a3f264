//! `tamalloc trace --stacks` (issue 15): a C program with three call sites that first-touch
//! known page counts by kind, and a fourth whose pages the kernel touches inside read(2),
//! traced with `--regions anon`; the trace's `stack` records must put exactly those counts
//! under the right symbolized frames (and kernel frames under the fourth).
//!
//! The workload is built here with `cc` (frame pointers, -O0: every site is a frame). They
//! load the real eBPF programs on the host kernel, so they need root; without it, they fail
//! with that message rather than pass.

use std::{path::Path, process::Command};

use serde_json::Value;

mod common;

use common::{TempDir, bin, by_type, json_lines, require_root, succeeds};

/// The workload's truth (tests/stacks/three_sites.c): site → pages by kind.
const SITES: [(&str, &str, u64); 4] = [
    ("site_write", "write_zero", 24),
    ("site_read", "read_zero", 16),
    ("site_read_then_write", "read_zero", 8),
    ("site_read_then_write", "cow_zero", 8),
];
const KINDS: [&str; 5] = ["read_zero", "write_zero", "cow_zero", "cow", "other"];

/// Builds the workload into `dir`.
fn workload(dir: &TempDir) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stacks/three_sites.c");
    let exe = dir.arg("three_sites");
    let mut cc = Command::new("cc");
    cc.args(["-O0", "-g", "-fno-omit-frame-pointer", "-o", &exe])
        .arg(&src);
    succeeds(
        cc,
        "cc (from the set-up's gcc) building tests/stacks/three_sites.c",
    );
    exe
}

/// Traces `command` (the workload's path replaced for `{}`) with `--stacks --regions anon`
/// and `extra` tracer flags; returns the trace's records and the tracer's stderr.
fn traced(dir: &TempDir, exe: &str, extra: &[&str], command: &[&str]) -> (Vec<Value>, String) {
    let out = dir.arg("trace.jsonl");
    let mut tracer = Command::new(bin());
    tracer.args([
        "trace",
        "--quiet",
        "--stacks",
        "--regions",
        "anon",
        "--output",
        &out,
    ]);
    tracer.args(extra).arg("--");
    tracer.args(command.iter().map(|a| a.replace("{}", exe)));
    let traced = succeeds(tracer, "tamalloc trace --stacks");
    let stderr = String::from_utf8_lossy(&traced.stderr).into_owned();
    (json_lines(Path::new(&out)), stderr)
}

/// The user frames' function names of a `stack` record, leaf first.
fn user_functions(r: &Value) -> Vec<String> {
    r["frames"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter(|f| f["kernel"] != true)
                .map(|f| f["function"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn stacks_put_each_call_sites_pages_under_its_frames_exactly() {
    require_root();
    let dir = TempDir::new("stacks");
    let exe = workload(&dir);
    let (folded, svg, pprof) = (
        dir.arg("pages.folded"),
        dir.arg("pages.svg"),
        dir.arg("pages.pb.gz"),
    );
    let files = ["--folded", &folded, "--flamegraph", &svg, "--pprof", &pprof];
    let (records, stderr) = traced(&dir, &exe, &files, &["{}"]);
    let stacks = by_type(&records, "stack");
    assert!(!stacks.is_empty(), "no stack records; stderr:\n{stderr}");

    // Every site's pages, by kind, summed over the stacks whose leaf user frame it is.
    for (site, kind, pages) in SITES {
        let found: u64 = stacks
            .iter()
            .filter(|r| user_functions(r).first().map(String::as_str) == Some(site))
            .map(|r| r[kind].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            found, pages,
            "{kind} pages under {site}; stacks: {stacks:#?}"
        );
        // The caller is the next frame: frame pointers walked.
        let with_main = stacks.iter().any(|r| {
            let f = user_functions(r);
            f.first().map(String::as_str) == Some(site)
                && f.get(1).map(String::as_str) == Some("main")
        });
        assert!(with_main, "{site} called from main; stacks: {stacks:#?}");
    }
    // No other kind under the sites.
    for site in ["site_write", "site_read", "site_read_then_write"] {
        let all: u64 = stacks
            .iter()
            .filter(|r| user_functions(r).first().map(String::as_str) == Some(site))
            .map(|r| {
                KINDS
                    .iter()
                    .map(|k| r[*k].as_u64().unwrap_or(0))
                    .sum::<u64>()
            })
            .sum();
        let expected: u64 = SITES.iter().filter(|s| s.0 == site).map(|s| s.2).sum();
        assert_eq!(all, expected, "all pages under {site}");
    }

    // The kernel's touches: 4 write_zero pages under kernel frames, starting at the fault
    // (not in our program), with the read(2) path and the user stack after them.
    let kernel: Vec<&&Value> = stacks
        .iter()
        .filter(|r| {
            r["frames"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["kernel"] == true))
        })
        .collect();
    let pages: u64 = kernel
        .iter()
        .map(|r| r["write_zero"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(pages, 4, "kernel-made first touches; stacks: {kernel:#?}");
    for r in &kernel {
        let names: Vec<&str> = r["frames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["function"].as_str())
            .collect();
        assert!(
            !names[0].starts_with("bpf_"),
            "kernel stack starts in our program: {names:?}"
        );
        assert!(names.contains(&"ksys_read"), "read(2) path: {names:?}");
        assert!(
            names.contains(&"main"),
            "user frames after the kernel's: {names:?}"
        );
    }

    // Every stack is the workload's, named, in one of its regions; nothing lost.
    for r in &stacks {
        assert_eq!(r["comm"], "three_sites", "{r}");
        assert_ne!(r["region"], 0, "region named: {r}");
    }
    // The stacks account for every page the summary counts, kind by kind.
    let summary = by_type(&records, "summary");
    assert_eq!(summary.len(), 1, "{summary:#?}");
    for kind in KINDS {
        let in_stacks: u64 = stacks.iter().map(|r| r[kind].as_u64().unwrap_or(0)).sum();
        assert_eq!(
            Some(in_stacks),
            summary[0][kind].as_u64(),
            "{kind}: stacks vs summary"
        );
    }
    let drops = by_type(&records, "drops");
    assert_eq!(drops[0]["stacks_lost"], 0, "{}", drops[0]);
    assert_eq!(drops[0]["stacks_full"], 0, "{}", drops[0]);
    assert!(
        stderr.contains("frames not symbolized"),
        "the summary line about symbols: {stderr}"
    );

    check_folded(&std::fs::read_to_string(&folded).expect("the folded file"));
    check_flamegraph(&std::fs::read_to_string(&svg).expect("the SVG"));
    check_pprof(&pprof);
}

/// Folded lines, root first: `three_sites;...;main;SITE;[KIND] PAGES`.
fn check_folded(text: &str) {
    for (site, kind, pages) in SITES {
        let tail = format!(";main;{site};[{kind}] {pages}");
        let n = text.lines().filter(|l| l.ends_with(&tail)).count();
        assert_eq!(n, 1, "one folded line ending {tail:?} in:\n{text}");
    }
    let kernel = text
        .lines()
        .find(|l| l.contains("ksys_read_[k]"))
        .unwrap_or_else(|| panic!("a folded line through read(2) in:\n{text}"));
    assert!(kernel.contains(";main;"), "{kernel}");
    assert!(kernel.ends_with(";[write_zero] 4"), "{kernel}");
}

/// The flame graph's frames: `<title>NAME (N pages, P%)</title>`.
fn check_flamegraph(svg: &str) {
    let titles: Vec<&str> = svg
        .split("<title>")
        .skip(1)
        .filter_map(|t| t.split("</title>").next())
        .collect();
    let pages_of = |name: &str| -> Vec<u64> {
        titles
            .iter()
            .filter_map(|t| t.strip_prefix(&format!("{name} (")))
            .filter_map(|rest| rest.split(' ').next()?.replace(',', "").parse().ok())
            .collect()
    };
    assert_eq!(pages_of("site_write"), vec![24], "{titles:#?}");
    assert_eq!(pages_of("site_read"), vec![16], "{titles:#?}");
    // Both of its kinds, 8 + 8, under one frame.
    assert_eq!(pages_of("site_read_then_write"), vec![16], "{titles:#?}");
    assert!(pages_of("ksys_read").contains(&4), "{titles:#?}");
}

/// The real consumer, `go tool pprof`: `-top` per kind gives each site's own (flat)
/// pages, `-raw` the samples with their labels.
fn check_pprof(path: &str) {
    let top = |index: &str| -> String {
        let mut go = Command::new("go");
        go.args([
            "tool",
            "pprof",
            "-top",
            &format!("-sample_index={index}"),
            path,
        ]);
        let out = succeeds(go, "go tool pprof (golang-go, from the set-up)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let flat = |text: &str, function: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.last() != Some(&function) {
                return None;
            }
            cols.first()?.trim_end_matches("pages").parse().ok()
        })
    };
    for (site, kind, pages) in SITES {
        let text = top(&format!("{kind}_pages"));
        assert_eq!(
            flat(&text, site),
            Some(pages),
            "{site} in -top of {kind}:\n{text}"
        );
    }
    let mut raw = Command::new("go");
    raw.args(["tool", "pprof", "-raw", path]);
    let raw = String::from_utf8_lossy(&succeeds(raw, "go tool pprof -raw").stdout).into_owned();
    assert!(raw.contains("write_zero_pages/pages[dflt]"), "{raw}");
    // site_write's sample: 24 pages and 98,304 bytes of write_zero, labelled.
    let sample = raw
        .lines()
        .position(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            v.len() > 7 && v[1] == "24" && v[6] == "98304"
        })
        .unwrap_or_else(|| panic!("site_write's sample in:\n{raw}"));
    let labels: String = raw.lines().skip(sample + 1).take(2).collect();
    assert!(labels.contains("comm:[three_sites]"), "{labels}");
}

/// A shell that runs a little, then execs the workload under the same pid: the shell's
/// stacks are the shell's (named `sh`), the workload's are named by it and exact, each read
/// through its own image's objects.
#[test]
fn stacks_of_one_pid_before_and_after_exec_stay_apart() {
    require_root();
    let dir = TempDir::new("stacks-exec");
    let exe = workload(&dir);
    let (records, _) = traced(&dir, &exe, &[], &["sh", "-c", "sleep 0.2; exec {} 300"]);
    let stacks = by_type(&records, "stack");
    let pid = |name: &str| -> Vec<u64> {
        let mut p: Vec<u64> = stacks
            .iter()
            .filter(|r| r["comm"] == name)
            .filter_map(|r| r["pid"].as_u64())
            .collect();
        p.dedup();
        p
    };
    assert_eq!(pid("three_sites").len(), 1, "{stacks:#?}");
    assert_eq!(
        pid("sh"),
        pid("three_sites"),
        "one pid, two images: {stacks:#?}"
    );
    for (site, kind, pages) in SITES {
        let found: u64 = stacks
            .iter()
            .filter(|r| user_functions(r).first().map(String::as_str) == Some(site))
            .map(|r| {
                assert_eq!(r["comm"], "three_sites", "{r}");
                r[kind].as_u64().unwrap_or(0)
            })
            .sum();
        assert_eq!(found, pages, "{kind} pages under {site}");
    }
    // The shell's own frames resolve in the shell's objects, not the workload's.
    for r in stacks.iter().filter(|r| r["comm"] == "sh") {
        for f in r["frames"].as_array().into_iter().flatten() {
            assert!(
                f["module"]
                    .as_str()
                    .is_none_or(|m| !m.ends_with("three_sites")),
                "a shell frame read through the workload: {r}"
            );
        }
    }
}
