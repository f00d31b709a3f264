//! The pprof profile read back by the real consumer: `tamalloc report --pprof` writes one from
//! a trace of known `stack` records, and `go tool pprof -raw` and `-top` (Debian's
//! `golang-go`, which `cargo xtask setup` installs) must show exactly their samples, values,
//! labels and frames. Needs `go` on PATH (fails saying so when it is missing), not root.

mod common;

use std::{collections::BTreeMap, process::Command};

use common::{TempDir, bin, succeeds};
use tamalloc::tracer::record::{Record, StackFrame};

/// A user frame of `/nonexistent/prog` (absent, so pprof cannot re-symbolize it; the
/// profile's own names must be what it shows).
fn user(addr: u64, function: &str, line: u32) -> StackFrame {
    StackFrame {
        addr,
        function: Some(function.into()),
        module: Some("/nonexistent/prog".into()),
        build_id: Some("0123abcd".into()),
        file_offset: Some(addr - 0x40_0000),
        file: Some("prog.c".into()),
        line: Some(line),
        ..StackFrame::default()
    }
}

fn kernel(addr: u64, function: &str) -> StackFrame {
    StackFrame {
        addr,
        kernel: true,
        function: Some(function.into()),
        ..StackFrame::default()
    }
}

fn stack(pid: u32, region: u64, pages: [u64; 5], frames: Vec<StackFrame>) -> Record {
    Record::stack(pid, "three-sites".into(), region, pages, frames)
}

/// Three call sites of `main` in pid 100 — `touch_write` (write_zero 7), `touch_read`
/// (read_zero 5, then cow_zero 2 when written), `read_into`, whose `read(2)` (libc,
/// unsymbolized) has the kernel touch the pages (write_zero 3) — and `touch_write` again in
/// pid 101 (write_zero 4, cow 1).
fn records() -> Vec<Record> {
    let main = user(0x40_1000, "main", 10);
    let libc_read = StackFrame {
        addr: 0x7f12_3456_7890,
        module: Some("/nonexistent/libc.so.6".into()),
        file_offset: Some(0x10_7890),
        ..StackFrame::default()
    };
    vec![
        stack(
            100,
            0x7f00_0000_0000,
            [0, 7, 0, 0, 0],
            vec![user(0x40_1100, "touch_write", 20), main.clone()],
        ),
        stack(
            100,
            0x7f00_0000_0000,
            [5, 0, 2, 0, 0],
            vec![user(0x40_1200, "touch_read", 30), main.clone()],
        ),
        stack(
            100,
            0x7f00_1000_0000,
            [0, 3, 0, 0, 0],
            vec![
                kernel(0xffff_ffff_8110_0000, "clear_user"),
                kernel(0xffff_ffff_8120_0000, "ksys_read"),
                libc_read,
                user(0x40_1300, "read_into", 40),
                main.clone(),
            ],
        ),
        stack(
            101,
            0x7f00_2000_0000,
            [0, 4, 0, 1, 0],
            vec![user(0x40_1100, "touch_write", 20), main],
        ),
    ]
}

/// `go tool pprof ARGS`; its stdout.
fn pprof(args: &[&str]) -> String {
    let version = Command::new("go").arg("version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "go is missing: this test reads the profile with `go tool pprof` (`cargo xtask setup` \
         installs Debian's golang-go, or apt-get install golang-go)"
    );
    let mut cmd = Command::new("go");
    cmd.args(["tool", "pprof"]).args(args);
    String::from_utf8_lossy(&succeeds(cmd, "go tool pprof").stdout).into_owned()
}

/// The profile `tamalloc report --pprof` writes for [`records`].
fn profile(dir: &TempDir) -> String {
    let mut jsonl = String::new();
    for r in records() {
        jsonl.push_str(&serde_json::to_string(&r).expect("a record as JSON"));
        jsonl.push('\n');
    }
    std::fs::write(dir.path("t.jsonl"), jsonl).expect("write the trace");
    let mut cmd = Command::new(bin());
    cmd.args([
        "report",
        &dir.arg("t.jsonl"),
        "--pprof",
        &dir.arg("p.pb.gz"),
    ]);
    succeeds(cmd, "tamalloc report --pprof");
    dir.arg("p.pb.gz")
}

#[test]
fn go_tool_pprof_raw_shows_every_sample_with_its_values_labels_and_frames() {
    let dir = TempDir::new("pprof-raw");
    let raw = pprof(&["-raw", &profile(&dir)]);
    let section = |name: &str| -> Vec<&str> {
        raw.lines()
            .skip_while(|l| !l.starts_with(name))
            .skip(1)
            .take_while(|l| !["Samples:", "Locations", "Mappings"].contains(&l.trim()))
            .collect()
    };
    // `   1: 0x401100 M=1 touch_write prog.c:20 s=0` -> 1 => "touch_write prog.c:20".
    let locations: BTreeMap<&str, String> = section("Locations")
        .into_iter()
        .filter_map(|l| {
            let (id, rest) = l.trim().split_once(": ")?;
            let mut words = rest.split_whitespace().skip(2);
            let name = match (words.next(), words.next()) {
                (Some(f), Some(line)) => format!("{f} {line}"),
                _ => format!("0x{}", rest.trim_start_matches("0x").split(' ').next()?),
            };
            Some((id, name))
        })
        .collect();
    let samples = section("Samples:");
    assert_eq!(
        samples
            .first()
            .map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec![
            "read_zero_pages/pages",
            "write_zero_pages/pages[dflt]",
            "cow_zero_pages/pages",
            "cow_pages/pages",
            "other_pages/pages",
            "read_zero_bytes/bytes",
            "write_zero_bytes/bytes",
            "cow_zero_bytes/bytes",
            "cow_bytes/bytes",
            "other_bytes/bytes",
        ]),
        "{raw}"
    );
    // Each sample: `VALUES: LOCATION IDS`, then its labels on the following lines.
    let mut got = Vec::new();
    for l in &samples[1..] {
        if let Some((values, ids)) = l.split_once(": ") {
            let frames: Vec<&str> = ids
                .split_whitespace()
                .map(|id| locations.get(id).map_or("?", String::as_str))
                .collect();
            got.push(format!("{} | {}", values.trim(), frames.join(" < ")));
        } else if let Some(last) = got.last_mut() {
            last.push_str(" | ");
            last.push_str(l.trim());
        }
    }
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let got: Vec<String> = got.iter().map(|s| squeeze(s)).collect();
    assert_eq!(
        got,
        [
            "0 7 0 0 0 0 28672 0 0 0 | touch_write prog.c:20 < main prog.c:10 \
             | comm:[three-sites] region:[0x7f0000000000] | pid:[100]",
            "5 0 2 0 0 20480 0 8192 0 0 | touch_read prog.c:30 < main prog.c:10 \
             | comm:[three-sites] region:[0x7f0000000000] | pid:[100]",
            "0 3 0 0 0 0 12288 0 0 0 | clear_user :0 < ksys_read :0 < 0x7f1234567890 < \
             read_into prog.c:40 < main prog.c:10 \
             | comm:[three-sites] region:[0x7f0010000000] | pid:[100]",
            "0 4 0 1 0 0 16384 0 4096 0 | touch_write prog.c:20 < main prog.c:10 \
             | comm:[three-sites] region:[0x7f0020000000] | pid:[101]",
        ],
        "{raw}"
    );
    // The mappings (as pprof renumbers them, in the order samples reach them, leaf first):
    // the program with its build ID, the kernel, libc (with no function: pprof would
    // symbolize its address from the file, were it there).
    let mappings: Vec<String> = section("Mappings").iter().map(|l| squeeze(l)).collect();
    assert_eq!(
        mappings,
        [
            "1: 0x401000/0x401301/0x1000 /nonexistent/prog 0123abcd [FN][FL][LN]",
            "2: 0xffffffff81100000/0xffffffff81200001/0x0 [kernel.kallsyms] [FN]",
            "3: 0x7f1234567890/0x7f1234567891/0x107890 /nonexistent/libc.so.6",
        ],
        "{raw}"
    );
}

#[test]
fn go_tool_pprof_top_adds_up_write_zero_pages_per_function() {
    let dir = TempDir::new("pprof-top");
    let top = pprof(&["-top", "-sample_index=write_zero_pages", &profile(&dir)]);
    assert!(top.contains("Type: write_zero_pages"), "{top}");
    assert!(
        top.contains("Showing nodes accounting for 14pages, 100% of 14pages total"),
        "{top}"
    );
    // `flat flat% sum% cum cum% NAME` rows.
    let rows: BTreeMap<String, (String, String)> = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let [flat, _, _, cum, _, name @ ..] = w.as_slice() else {
                return None;
            };
            Some((name.join(" "), (flat.to_string(), cum.to_string())))
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("touch_write", "11pages", "11pages"),
        ("clear_user", "3pages", "3pages"),
        ("ksys_read", "0", "3pages"),
        ("[libc.so.6]", "0", "3pages"),
        ("read_into", "0", "3pages"),
        ("main", "0", "14pages"),
    ]
    .into_iter()
    .map(|(n, f, c)| (n.to_owned(), (f.to_owned(), c.to_owned())))
    .collect();
    assert_eq!(rows, want, "{top}");
}
