//! `tamalloc report TRACE --folded/--flamegraph/--pprof`: the first-touch stacks of a trace,
//! JSON lines or a recording (the same records give the same files), one process with `-p`,
//! and one line saying what to do when the trace has none. `trace`'s stack files need
//! `--stacks`. No root needed: nothing is traced.

use std::process::{Command, Output};

mod common;

use common::{TempDir, bin};
use tamalloc::{
    output::recording::Recording,
    tracer::{
        Sink as _,
        record::{Record, SCHEMA_VERSION, StackFrame},
    },
};

fn meta() -> Record {
    Record::Meta {
        version: SCHEMA_VERSION,
        tool: "tamalloc test".into(),
        kernel: "6.18".into(),
        stats_source: "procfs".into(),
        events: true,
        mode: "kernel".into(),
        follows: "anon".into(),
    }
}

fn frame(addr: u64, function: &str) -> StackFrame {
    StackFrame {
        addr,
        function: Some(function.into()),
        ..StackFrame::default()
    }
}

fn stack(pid: u32, pages: [u64; 5], frames: Vec<StackFrame>) -> Record {
    Record::stack(pid, format!("app{pid}"), 0x1000, pages, frames)
}

/// A trace with `stacks` between its meta and a summary.
fn trace(stacks: bool) -> Vec<Record> {
    let mut out = vec![meta()];
    if stacks {
        out.push(stack(
            7,
            [2, 5, 0, 0, 0],
            vec![frame(0x20, "touch"), frame(0x10, "main")],
        ));
        out.push(stack(
            8,
            [0, 0, 0, 3, 0],
            vec![
                StackFrame {
                    kernel: true,
                    ..frame(0xffff_0000, "copy_page")
                },
                frame(0x10, "main"),
            ],
        ));
    }
    out.push(Record::Summary {
        pid: 7,
        comm: "app7".into(),
        read_zero: 2,
        write_zero: 5,
        cow_zero: 0,
        cow: 0,
        other: 0,
        regions: 1,
        huge_faults: 0,
    });
    out
}

fn write_jsonl(dir: &TempDir, name: &str, records: &[Record]) -> String {
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("JSON") + "\n")
        .collect();
    std::fs::write(dir.path(name), text).expect("write the trace");
    dir.arg(name)
}

fn write_recording(dir: &TempDir, name: &str, records: &[Record]) -> String {
    let file = std::fs::File::create(dir.path(name)).expect("create the recording");
    let mut sink = Recording::new(file);
    for r in records {
        sink.record(r).expect("record");
    }
    sink.finish().expect("finish");
    dir.arg(name)
}

fn tamalloc(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run tamalloc")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "tamalloc failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const FOLDED: &str = "app7;main;touch;[read_zero] 2\n\
                      app7;main;touch;[write_zero] 5\n\
                      app8;main;copy_page_[k];[cow] 3\n";

#[test]
fn json_lines_and_a_recording_give_the_same_stack_files() {
    let dir = TempDir::new("report-stacks");
    let jsonl = write_jsonl(&dir, "t.jsonl", &trace(true));
    let rec = write_recording(&dir, "t.tamrec", &trace(true));
    for (input, tag) in [(&jsonl, "j"), (&rec, "r")] {
        let (folded, svg, pprof) = (
            dir.arg(&format!("{tag}.folded")),
            dir.arg(&format!("{tag}.svg")),
            dir.arg(&format!("{tag}.pb.gz")),
        );
        let out = ok(tamalloc(&[
            "report",
            input,
            "--folded",
            &folded,
            "--flamegraph",
            &svg,
            "--pprof",
            &pprof,
        ]));
        assert_eq!(
            out,
            format!("wrote {folded}\nwrote {svg}\nwrote {pprof}\n"),
            "only what it wrote: no summary"
        );
        assert_eq!(std::fs::read_to_string(&folded).unwrap_or_default(), FOLDED);
        let svg = std::fs::read_to_string(&svg).unwrap_or_default();
        assert!(svg.contains("Pages first touched"), "{svg}");
        assert!(svg.contains("<title>touch (7 pages, "), "{svg}");
        let gz = std::fs::read(&pprof).unwrap_or_default();
        assert_eq!(gz.get(..2), Some(&[0x1f, 0x8b][..]), "gzip");
    }
    // The same bytes from either form.
    for ext in ["svg", "pb.gz"] {
        assert_eq!(
            std::fs::read(dir.path(&format!("j.{ext}"))).ok(),
            std::fs::read(dir.path(&format!("r.{ext}"))).ok(),
            "{ext}"
        );
    }
    // One process (`-p`): only its stacks.
    ok(tamalloc(&[
        "report",
        &jsonl,
        "-p",
        "8",
        "--folded",
        &dir.arg("p8.folded"),
    ]));
    assert_eq!(
        std::fs::read_to_string(dir.path("p8.folded")).unwrap_or_default(),
        "app8;main;copy_page_[k];[cow] 3\n"
    );
}

#[test]
fn a_trace_without_stacks_says_to_trace_with_stacks() {
    let dir = TempDir::new("report-no-stacks");
    let jsonl = write_jsonl(&dir, "t.jsonl", &trace(false));
    let out = tamalloc(&["report", &jsonl, "--flamegraph", &dir.arg("out.svg")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err,
        format!(
            "tamalloc: {jsonl} has no first-touch stacks: trace with --stacks (e.g. sudo \
             tamalloc trace --stacks --record run.tamrec -- CMD)\n"
        )
    );
    assert!(!dir.path("out.svg").exists(), "no file for nothing");
    let with = write_jsonl(&dir, "s.jsonl", &trace(true));
    let out = tamalloc(&["report", &with, "-p", "9", "--pprof", &dir.arg("p.pb.gz")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no first-touch stacks of pid 9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn trace_stack_files_need_stacks() {
    for flag in ["--folded", "--flamegraph", "--pprof"] {
        let out = tamalloc(&["trace", flag, "x", "--", "true"]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("tamalloc: ") && err.contains("--stacks") && err.lines().count() == 1,
            "{flag}: {err}"
        );
    }
}
