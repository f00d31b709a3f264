//! `tamalloc report TRACE --svg OUT`: drawn from a small synthetic trace and from a real
//! traced run, and checked as XML: an `<svg>` root, one panel per process (its caption), one
//! line per series plus its legend swatch (polylines of the series' colour) and the legend
//! labels.
//!
//! The real run loads eBPF programs, so that test needs root (CI runs as root); without it
//! it fails with that message rather than pass silently.

use std::{
    path::Path,
    process::{Command, Output},
};

mod common;

use common::{TempDir, bin, require_root};

fn report(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("report")
        .args(args)
        .output()
        .expect("run tamalloc report")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "tamalloc report failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the test reads back from the SVG.
struct Svg {
    height: u32,
    texts: Vec<String>,
    /// (stroke colour in lower case, stroke width, number of points, is a legend swatch)
    /// of every polyline.
    polylines: Vec<(String, String, usize, bool)>,
}

fn parse(path: &Path) -> Svg {
    let text = std::fs::read_to_string(path).expect("read svg");
    let doc = roxmltree::Document::parse(&text).expect("the report is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let height = root
        .attribute("height")
        .and_then(|h| h.parse().ok())
        .expect("svg height");
    let texts = root
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_owned())
        .collect();
    let polylines = root
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| {
            let points: Vec<(f64, f64)> = n
                .attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|p| p.split_once(','))
                .filter_map(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
                .collect();
            // The legend's swatch: a 20-pixel horizontal stroke.
            let swatch = points.len() == 2
                && points[0].1 == points[1].1
                && points[1].0 - points[0].0 == 20.0;
            (
                n.attribute("stroke").unwrap_or("").to_lowercase(),
                n.attribute("stroke-width").unwrap_or("").to_owned(),
                points.len(),
                swatch,
            )
        })
        .collect();
    Svg {
        height,
        texts,
        polylines,
    }
}

impl Svg {
    fn has_text(&self, t: &str) -> bool {
        self.texts.iter().any(|x| x.contains(t))
    }
    /// One panel of `demo --read-first` (every page read, then written): one line and one
    /// legend swatch each for reserved, resident, VmRSS, read_zero and cow_zero.
    fn assert_read_first_panel(&self) {
        for (color, what) in [
            (RESERVED, "reserved"),
            (RESIDENT, "resident"),
            (VM_RSS, "VmRSS"),
            (READ_ZERO, "read_zero"),
            (COW_ZERO, "cow_zero"),
        ] {
            assert_eq!(self.lines(color), (1, 1), "{what}");
        }
    }
    /// Polylines of a colour: the series' lines and their legend swatches (2 points).
    fn lines(&self, color: &str) -> (usize, usize) {
        let of: Vec<_> = self.polylines.iter().filter(|p| p.0 == color).collect();
        let legend = of.iter().filter(|p| p.3).count();
        (of.len() - legend, legend)
    }
}

const RESERVED: &str = "#1f77b4";
const RESIDENT: &str = "#d62728";
const VM_RSS: &str = "#7f7f7f";
const READ_ZERO: &str = "#2ca02c";
const WRITE_ZERO: &str = "#ff7f0e";
const COW_ZERO: &str = "#9467bd";

fn stats(ts: u64, pid: u32, comm: &str, rss: u64, resident: u64, f: [u64; 3]) -> String {
    format!(
        r#"{{"type":"stats","ts_ns":{ts},"pid":{pid},"comm":"{comm}","vm_size_kib":50000,"vm_rss_kib":{rss},"rss_anon_kib":0,"rss_file_kib":0,"rss_shmem_kib":0,"oom_score":1,"oom_score_adj":0,"resident_permille":1,"tamalloc_regions":1,"tamalloc_reserved_kib":8192,"tamalloc_resident_kib":{resident},"read_zero":{},"write_zero":{},"cow_zero":{},"cow":0,"other":0,"reserved_bytes":8388608,"source":"syscall"}}"#,
        f[0], f[1], f[2]
    )
}

fn fault(ts: u64, pid: u32, kind: &str, page: u64) -> String {
    let addr = 0x7f00_0000_0000u64 + page * 4096;
    format!(
        r#"{{"type":"fault","ts_ns":{ts},"pid":{pid},"tid":{pid},"kind":"{kind}","addr":{addr},"region":139637976727552,"page":{page}}}"#
    )
}

/// pid 100 writes 3 pages (faults streamed); pid 200 reads then writes 2 pages and the
/// kernel reports its resident size (no fault records: counts from stats); pid 300 only
/// execs (no regions: not drawn). A record type from a newer schema is skipped.
fn synthetic() -> String {
    let s = 1_000_000_000u64;
    let mut lines = vec![
        r#"{"type":"meta","version":1,"tool":"tamalloc 0.1.0","kernel":"6.1.0","stats_source":"syscall","events":true}"#.to_owned(),
        format!(r#"{{"type":"exec","ts_ns":{},"pid":300}}"#, 10 * s),
        format!(r#"{{"type":"region","ts_ns":{},"pid":100,"tid":100,"addr":139637976727552,"len":8388608,"fallback":false}}"#, 10 * s),
        format!(r#"{{"type":"region","ts_ns":{},"pid":200,"tid":200,"addr":139637976727552,"len":8388608,"fallback":false}}"#, 10 * s),
        r#"{"type":"from_the_future","ts_ns":1}"#.to_owned(),
    ];
    for i in 0..3 {
        lines.push(fault(10 * s + (i + 1) * s / 2, 100, "write_zero", i));
    }
    lines.push(stats(11 * s, 100, "a", 9000, 0, [0, 2, 0]));
    lines.push(stats(11 * s, 200, "b", 9000, 4, [1, 0, 1]));
    lines.push(stats(12 * s, 100, "a", 9004, 0, [0, 3, 0]));
    lines.push(stats(12 * s, 200, "b", 9008, 8, [2, 0, 2]));
    lines.push(format!(r#"{{"type":"exit","ts_ns":{},"pid":100}}"#, 13 * s));
    for (pid, comm, f) in [(100, "a", [0, 3, 0]), (200, "b", [2, 0, 2])] {
        lines.push(format!(
            r#"{{"type":"summary","pid":{pid},"comm":"{comm}","read_zero":{},"write_zero":{},"cow_zero":{},"cow":0,"other":0,"regions":1}}"#,
            f[0], f[1], f[2]
        ));
    }
    lines.push(
        r#"{"type":"drops","count":0,"fault_events":0,"control_events":0,"map_full":0}"#.to_owned(),
    );
    lines.join("\n") + "\n"
}

#[test]
fn report_svg_from_a_synthetic_trace_has_a_panel_per_process() {
    let dir = TempDir::new("report-synth");
    std::fs::write(dir.path("t.jsonl"), synthetic()).expect("write trace");
    let stdout = ok(report(&[&dir.arg("t.jsonl"), "--svg", &dir.arg("all.svg")]));
    assert!(
        stdout.contains("pid 100 (a): 1 region(s), 8.0 MiB reserved at most"),
        "{stdout}"
    );
    assert!(!stdout.contains("pid 300"), "{stdout}");

    let svg = parse(&dir.path("all.svg"));
    assert_eq!(svg.height, 2 * 640, "two panels");
    assert!(svg.has_text("pid 100 (a): 1 region, 8.0 MiB reserved at most"));
    assert!(svg.has_text("pid 200 (b)"));
    assert!(!svg.has_text("pid 300"));
    for t in [
        "seconds",
        "MiB",
        "pages",
        "reserved (tamalloc regions)",
        "VmRSS",
        "write_zero",
        "read_zero",
        "cow_zero",
    ] {
        assert!(svg.has_text(t), "no text {t:?} in {:?}", svg.texts);
    }
    // pid 100 derives resident from its writes, pid 200 has the kernel's numbers.
    assert!(svg.has_text("resident (write_zero + cow_zero pages)"));
    assert!(svg.has_text("resident (tamalloc regions)"));
    // One line and one legend swatch per series per panel.
    assert_eq!(svg.lines(RESERVED), (2, 2));
    assert_eq!(svg.lines(RESIDENT), (2, 2));
    assert_eq!(svg.lines(VM_RSS), (2, 2));
    assert_eq!(svg.lines(WRITE_ZERO), (2, 2), "write_zero is always drawn");
    assert_eq!(svg.lines(READ_ZERO), (1, 1), "only pid 200 read");
    assert_eq!(svg.lines(COW_ZERO), (1, 1));
    // The written pages are a staircase: 3 steps of 2 points, a start and an end.
    let w = svg
        .polylines
        .iter()
        .filter(|p| p.0 == WRITE_ZERO && !p.3)
        .map(|p| p.2)
        .max();
    assert!(w >= Some(6), "{w:?}");

    // --pid: that process alone.
    ok(report(&[
        &dir.arg("t.jsonl"),
        "--svg",
        &dir.arg("one.svg"),
        "--pid",
        "200",
    ]));
    let one = parse(&dir.path("one.svg"));
    assert_eq!(one.height, 640);
    assert!(one.has_text("pid 200 (b)") && !one.has_text("pid 100"));
}

#[test]
fn report_errors_are_one_clear_line() {
    let dir = TempDir::new("report-err");
    std::fs::write(dir.path("t.jsonl"), synthetic()).expect("write trace");
    std::fs::write(dir.path("bad.jsonl"), "{\"type\":\"meta\"\nnot json\n").expect("write");
    std::fs::write(dir.path("empty.jsonl"), "").expect("write");
    for (args, want) in [
        (
            vec![dir.arg("t.jsonl"), "--pid".into(), "999".into()],
            "pid 999 is not in the trace (its processes: 100, 200)",
        ),
        (
            vec![dir.arg("bad.jsonl")],
            "bad.jsonl:1: not a trace record",
        ),
        (vec![dir.arg("empty.jsonl")], "has no traced process"),
        (vec![dir.arg("missing.jsonl")], "cannot read"),
        (
            vec![
                dir.arg("t.jsonl"),
                "--svg".into(),
                "/proc/version/x.svg".into(),
            ],
            "cannot write /proc/version/x.svg",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = report(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn report_svg_from_a_real_traced_run() {
    require_root();
    let dir = TempDir::new("report-real");
    let out = Command::new(bin())
        .args(["trace", "--quiet", "--interval", "100ms"])
        .args(["--output", &dir.arg("t.jsonl"), "--", bin(), "demo"])
        .args(["--size", "4MiB", "--rate", "8MiB/s", "--read-first"])
        .output()
        .expect("run tamalloc trace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let demo: serde_json::Value = stdout
        .lines()
        .find(|l| l.starts_with(r#"{"type":"demo""#))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no demo line in {stdout}"));
    let pid = demo["pid"].as_u64().expect("pid");

    let summary = ok(report(&[
        &dir.arg("t.jsonl"),
        "--svg",
        &dir.arg("r.svg"),
        "--pid",
        &pid.to_string(),
    ]));
    assert!(
        summary.contains(&format!(
            "read_zero {}, write_zero 0, cow_zero {}",
            demo["read_zero"], demo["cow_zero"]
        )),
        "{summary}"
    );
    let svg = parse(&dir.path("r.svg"));
    assert!(svg.has_text(&format!("pid {pid} (tamalloc): 1 region, 4.0 MiB")));
    svg.assert_read_first_panel();
    // The staircase of 1024 first touches reaches the top.
    let cow = svg
        .polylines
        .iter()
        .find(|p| p.0 == COW_ZERO && !p.3)
        .expect("cow_zero line");
    assert!(cow.2 > 10, "{cow:?}");
}

#[test]
fn report_svg_in_the_docs_is_a_report_of_the_read_first_demo() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/lazy-zeroing.svg");
    let svg = parse(&path);
    assert!(svg.has_text("(tamalloc): 1 region, 32.0 MiB reserved at most"));
    svg.assert_read_first_panel();
}
