//! `tamalloc record` and `tamalloc report` on recordings, against the demo, on the host
//! kernel: Ctrl-C leaves a complete file, drops are counted exactly when a small ring
//! refuses events, and a file that is not a recording (or is from a newer tamalloc, or cut
//! short) gets one line saying so. (The byte-for-byte round trip through every exporter and
//! the burst are in tamalloc-bench/tests/record.rs, beside the workload rigs.)
//!
//! The tracing tests load eBPF programs, so they need root (CI runs as root); without it
//! they fail with that message rather than pass silently.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

mod common;

use common::{KINDS, TempDir, bin, by_type, json_lines, require_root, succeeds, wait_for_line};

/// `tamalloc report REC --format jsonl -o OUT`, which must succeed; the records and stderr.
fn to_jsonl(dir: &TempDir, rec: &str) -> (Vec<Value>, String) {
    let out = dir.path("conv.jsonl");
    let mut cmd = Command::new(bin());
    cmd.args(["report", rec, "--format", "jsonl", "-o"])
        .arg(&out);
    let run = succeeds(cmd, "tamalloc report");
    (
        json_lines(&out),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

#[test]
fn record_is_complete_after_ctrl_c() {
    require_root();
    let dir = TempDir::new("record-int");
    let rec = dir.arg("r.tamrec");
    let mut child = Command::new(bin())
        .args(["record", "-o", &rec, "--", bin(), "demo", "--size", "64MiB"])
        .args(["--rate", "1MiB/s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tamalloc record");
    // Interrupt once the demo is touching pages: its first progress line.
    let started = wait_for_line(&mut child, "touched", Duration::from_secs(60));
    // Let some faults happen first.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory preconditions; the pid is our live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait for tamalloc record");
    assert!(started, "the demo never started under the tracer");
    assert!(
        status.success(),
        "Ctrl-C ends a recording normally: {status}"
    );
    let (records, stderr) = to_jsonl(&dir, &rec);
    assert!(!stderr.contains("cut short"), "{stderr}");
    assert_eq!(records[0]["type"], "meta");
    assert_eq!(records[0]["events"], true);
    let n = records.len();
    assert_eq!(records[n - 1]["type"], "drops", "the drops record ends it");
    // The summaries come before it, then (faults streamed) the regions' summaries.
    assert!(
        matches!(
            records[n - 2]["type"].as_str(),
            Some("summary" | "region_summary")
        ),
        "the summaries come before it: {}",
        records[n - 2]
    );
    assert!(!by_type(&records, "summary").is_empty());
    assert!(!by_type(&records, "region").is_empty());
    assert!(!by_type(&records, "fault").is_empty());
    // The report draws a recording as it draws JSON lines.
    let mut svg = Command::new(bin());
    svg.args(["report", &rec, "--svg", &dir.arg("r.svg")]);
    let run = succeeds(svg, "tamalloc report --svg");
    assert!(String::from_utf8_lossy(&run.stdout).contains("1 region(s)"));
    assert!(dir.path("r.svg").is_file());
}

/// At the smallest ring, a demo faults while the tracer cannot drain (it is stopped), so
/// the ring overflows for certain: the drops record says exactly how many fault events the
/// ring refused, i.e. the faults the counters saw (the summaries) minus the fault records
/// that reached the file. (Left running, the tracer may well keep up with a 4 KiB ring on
/// a quiet machine.)
#[test]
fn record_counts_drops_exactly_at_a_small_ring() {
    require_root();
    let dir = TempDir::new("record-drops");
    let rec = dir.arg("r.tamrec");
    let (go, done) = (dir.arg("go"), dir.arg("done"));
    let fifo = std::ffi::CString::new(go.as_str()).expect("a path without NUL");
    // SAFETY: a NUL-terminated path in our own temp dir.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    // The demo starts when told, and says when it is done.
    let script = format!(
        "read _ < {go}; {} demo --size 64MiB --rate 0 --read-first > {done}.tmp && mv {done}.tmp {done}",
        bin()
    );
    let mut tracer = Command::new(bin())
        .args([
            "record",
            "-o",
            &rec,
            "--ring-size",
            "4KiB",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tamalloc record");
    // The command runs once every probe is attached: its end of the FIFO opening says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut writer = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&go)
        {
            Ok(f) => break f,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the traced command never started: {e}"),
        }
    };
    let pid = tracer.id() as libc::pid_t;
    // SAFETY: kill has no memory preconditions; the pid is our live child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    writer.write_all(b"go\n").expect("release the demo");
    drop(writer);
    let finished = loop {
        if Path::new(&done).exists() {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let status = tracer.wait().expect("wait for tamalloc record");
    assert!(
        finished,
        "the demo did not finish while the tracer was stopped"
    );
    assert!(status.success(), "tamalloc record: {status}");
    let (records, _) = to_jsonl(&dir, &rec);
    let counted: u64 = by_type(&records, "summary")
        .iter()
        .map(|s| KINDS.iter().filter_map(|k| s[k].as_u64()).sum::<u64>())
        .sum();
    assert_eq!(
        counted,
        2 * 16384,
        "the counters are exact whatever the ring drops"
    );
    let streamed = by_type(&records, "fault").len() as u64;
    let drops = records.last().expect("records");
    assert_eq!(drops["type"], "drops");
    assert!(
        drops["fault_events"].as_u64() > Some(0),
        "the ring overflowed: {drops}"
    );
    assert_eq!(
        drops["fault_events"].as_u64(),
        Some(counted - streamed),
        "{drops}"
    );
}

fn report_error(file: &Path) -> String {
    let out = Command::new(bin())
        .arg("report")
        .arg(file)
        .args(["--format", "csv", "-o"])
        .arg(file.with_extension("csv"))
        .output()
        .expect("run tamalloc report");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn report_says_in_one_line_what_is_wrong_with_a_recording() {
    let dir = TempDir::new("record-bad");
    let header = |format: u8, schema: u32| {
        let meta = br#"{"type":"meta","version":1,"tool":"t","kernel":"k","stats_source":"procfs","events":true,"mode":"tracepoint"}"#;
        let mut b = b"TAMREC\0".to_vec();
        b.push(format);
        b.extend(schema.to_le_bytes());
        b.extend(56u32.to_le_bytes()); // size_of::<Event>()
        b.extend((meta.len() as u32).to_le_bytes());
        b.extend(meta);
        b
    };
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let newer = write("newer.tamrec", &header(2, 1));
    assert!(
        report_error(&newer).contains("written by a newer tamalloc (recording format 2"),
        "{}",
        report_error(&newer)
    );
    let schema = write("schema.tamrec", &header(1, 9));
    assert!(report_error(&schema).contains("(schema version 9"));
    let foreign = write("foreign.bin", b"\x7fELF\x02\x01\x01\0");
    assert!(report_error(&foreign).contains("not a trace record"));
    // Cut inside a frame: what is complete is converted, and one line says so.
    let mut cut = header(1, 1);
    cut.extend([2, 200, 0, 0, 0, b'{']);
    let cut = write("cut.tamrec", &cut);
    let out = Command::new(bin())
        .arg("report")
        .arg(&cut)
        .args(["--format", "jsonl", "-o"])
        .arg(dir.path("cut.jsonl"))
        .output()
        .expect("run tamalloc report");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cut short"), "{err}");
    assert_eq!(
        json_lines(&dir.path("cut.jsonl")).len(),
        1,
        "the meta record"
    );
}
