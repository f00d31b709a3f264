//! `tamalloc trace --format perfetto` (native protobuf), `--format chrome-json` and
//! `--events`, against the demo, on the host kernel.
//! (The CSV export and `--events` against workloads that know their own faults are in
//! tamalloc-bench/tests/export_exact.rs, beside the workload rig.)
//!
//! The native file is decoded with the protos it is written with (perfetto_protos); the
//! Perfetto UI itself loads one in tests/perfetto_ui.rs. The Chrome JSON file is checked
//! against the Chrome JSON trace event format (the object form, required keys per phase)
//! with serde_json.
//!
//! These tests load eBPF programs, so they need root (CI runs as root); without it they
//! fail with that message rather than pass silently.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use perfetto_protos::{
    trace::Trace, track_descriptor::TrackDescriptor, track_event::track_event::Type,
};
use protobuf::Message as _;
use serde_json::Value;

mod common;

use common::{KINDS, TempDir, bin, require_root, trace, wait_for_line};

/// The demo's last stdout line: `{"type":"demo","pid":...,"read_zero":...}`.
fn demo_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"{"type":"demo""#))
        .unwrap_or_else(|| panic!("no demo summary line in:\n{text}"));
    serde_json::from_str(line).expect("demo line is JSON")
}

fn num(v: &Value) -> bool {
    v.is_number()
}

/// Checks the Chrome JSON trace event format: the object form and each phase's keys.
fn check_chrome_trace(doc: &Value) -> &Vec<Value> {
    assert_eq!(doc["displayTimeUnit"], "ms");
    let events = doc["traceEvents"]
        .as_array()
        .expect("traceEvents is an array");
    for e in events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        assert!(e["name"].is_string(), "no name: {e}");
        assert!(e["pid"].is_u64(), "no pid: {e}");
        match ph {
            "C" => {
                assert!(num(&e["ts"]), "counter without ts: {e}");
                let args = e["args"].as_object().expect("counter args");
                assert!(!args.is_empty() && args.values().all(num), "{e}");
            }
            "i" => {
                assert!(num(&e["ts"]), "instant without ts: {e}");
                match e["s"].as_str() {
                    Some("t") => assert!(e["tid"].is_u64(), "thread instant without tid: {e}"),
                    Some("p" | "g") => {}
                    other => panic!("instant scope {other:?}: {e}"),
                }
            }
            "M" => {
                let name = e["name"].as_str().expect("name");
                assert!(
                    name == "process_name" || name == "thread_name",
                    "metadata {name}"
                );
                assert!(e["args"]["name"].is_string(), "{e}");
                if name == "thread_name" {
                    assert!(e["tid"].is_u64(), "{e}");
                }
            }
            other => panic!("unexpected phase {other}: {e}"),
        }
    }
    events
}

#[test]
fn export_chrome_json_has_counters_faults_and_names() {
    require_root();
    let dir = TempDir::new("chrome-json");
    let out = dir.path("trace.json");
    let run = trace(
        &[
            "--quiet",
            "--interval",
            "100ms",
            "--output",
            &dir.arg("trace.json"),
            "--format",
            "chrome-json",
        ],
        &[
            bin(),
            "demo",
            "--size",
            "4MiB",
            "--rate",
            "8MiB/s",
            "--read-first",
        ],
    );
    let demo = demo_line(&run.stdout);
    let pid = demo["pid"].as_u64().expect("pid");
    let text = std::fs::read_to_string(&out).expect("read trace");
    let doc: Value = serde_json::from_str(&text).expect("the file is one JSON document");
    let events = check_chrome_trace(&doc);
    let mine: Vec<&Value> = events.iter().filter(|e| e["pid"] == pid).collect();

    // Every fault is an instant on its thread, named by its kind.
    for k in KINDS {
        let n = mine
            .iter()
            .filter(|e| e["ph"] == "i" && e["name"] == k)
            .count() as u64;
        assert_eq!(Some(n), demo[k].as_u64(), "{k} instants");
    }
    // The region, with its address and length.
    let region = mine
        .iter()
        .find(|e| e["ph"] == "i" && e["name"] == "region")
        .expect("a region instant");
    assert_eq!(region["args"]["len"], demo["len"]);
    assert_eq!(
        region["args"]["addr"],
        format!("{:#x}", demo["addr"].as_u64().expect("addr"))
    );
    // Counter tracks.
    let counters: HashSet<&str> = mine
        .iter()
        .filter(|e| e["ph"] == "C")
        .filter_map(|e| e["name"].as_str())
        .collect();
    for c in [
        "VmRSS",
        "VmSize",
        "tamalloc reserved",
        "tamalloc resident",
        "pages touched",
    ] {
        assert!(counters.contains(c), "no {c} counter in {counters:?}");
    }
    let touched = mine
        .iter()
        .rfind(|e| e["ph"] == "C" && e["name"] == "pages touched")
        .expect("pages touched");
    for k in KINDS {
        let v = touched["args"][k].as_u64().expect("kind count");
        assert!(v <= demo[k].as_u64().unwrap_or(0), "{k}: {touched}");
    }
    // Names.
    assert!(
        mine.iter().any(|e| e["ph"] == "M"
            && e["name"] == "process_name"
            && e["args"]["name"] == "tamalloc"),
        "no process_name for {pid}"
    );
    assert!(
        mine.iter()
            .any(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["tid"] == pid),
        "no thread_name for {pid}"
    );
    assert_eq!(doc["otherData"]["meta"]["version"], 1);
    assert_eq!(doc["otherData"]["drops"]["count"], 0);
}

#[test]
fn export_chrome_json_is_complete_after_ctrl_c() {
    require_root();
    let dir = TempDir::new("chrome-json-int");
    let mut child = Command::new(bin())
        .args([
            "trace",
            "--quiet",
            "--output",
            &dir.arg("t.json"),
            "--format",
        ])
        .args(["chrome-json", "--", bin(), "demo", "--size", "64MiB"])
        .args(["--rate", "1MiB/s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tamalloc trace");
    // Interrupt once the demo is touching pages: its first progress line.
    let started = wait_for_line(&mut child, "touched", Duration::from_secs(60));
    // SAFETY: kill has no memory preconditions; the pid is our live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait for tamalloc trace");
    assert!(started, "the demo never started under the tracer");
    assert!(status.success(), "Ctrl-C ends a trace normally: {status}");
    let text = std::fs::read_to_string(dir.path("t.json")).expect("read trace");
    let doc: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not valid JSON after Ctrl-C ({e}): ...{}", tail(&text)));
    let events = check_chrome_trace(&doc);
    assert!(
        events.iter().any(|e| e["name"] == "region"),
        "the region made before Ctrl-C is in the file"
    );
}

/// A native Perfetto file, decoded: its track descriptors, and its events as (track uuid,
/// type, name) with interned names resolved.
struct Native {
    tracks: Vec<TrackDescriptor>,
    events: Vec<(u64, Type, String)>,
}

fn native(path: &std::path::Path) -> Native {
    let bytes = std::fs::read(path).expect("read trace");
    let trace = Trace::parse_from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{} is not a Perfetto trace: {e}", path.display()));
    let mut names = HashMap::new();
    let (mut tracks, mut events) = (Vec::new(), Vec::new());
    for p in &trace.packet {
        if let Some(data) = p.interned_data.as_ref() {
            for n in &data.event_names {
                names.insert(n.iid(), n.name().to_owned());
            }
        }
        if p.has_track_descriptor() {
            tracks.push(p.track_descriptor().clone());
        }
        if p.has_track_event() {
            let e = p.track_event();
            let name = names.get(&e.name_iid()).cloned().unwrap_or_default();
            events.push((e.track_uuid(), e.type_(), name));
        }
    }
    Native { tracks, events }
}

impl Native {
    fn count(&self, ty: Type, name: &str) -> u64 {
        self.events
            .iter()
            .filter(|(_, t, n)| *t == ty && n == name)
            .count() as u64
    }

    /// Region slices begun (named `MADE_BY region`).
    fn regions(&self) -> usize {
        self.events
            .iter()
            .filter(|(_, t, n)| *t == Type::TYPE_SLICE_BEGIN && n.ends_with(" region"))
            .count()
    }
}

#[test]
fn export_perfetto_has_every_fault_on_its_thread_and_the_region_as_a_slice() {
    require_root();
    let dir = TempDir::new("perfetto");
    let out = dir.path("trace.pftrace");
    let run = trace(
        &[
            "--quiet",
            "--interval",
            "100ms",
            "--output",
            &dir.arg("trace.pftrace"),
            "--format",
            "perfetto",
        ],
        &[
            bin(),
            "demo",
            "--size",
            "4MiB",
            "--rate",
            "8MiB/s",
            "--read-first",
        ],
    );
    let demo = demo_line(&run.stdout);
    let pid = demo["pid"].as_u64().expect("pid") as i32;
    let file = native(&out);
    for k in KINDS {
        assert_eq!(
            Some(file.count(Type::TYPE_INSTANT, k)),
            demo[k].as_u64(),
            "{k} instants"
        );
    }
    let process = file
        .tracks
        .iter()
        .rfind(|t| t.process.as_ref().is_some_and(|p| p.pid() == pid))
        .expect("a process track for the demo");
    assert_eq!(process.process.process_name(), "tamalloc");
    let children: HashSet<&str> = file
        .tracks
        .iter()
        .filter(|t| t.parent_uuid() == process.uuid())
        .map(|t| t.name())
        .collect();
    for c in ["VmRSS", "VmSize", "tamalloc reserved", "tamalloc resident"] {
        assert!(children.contains(c), "no {c} counter in {children:?}");
    }
    let region = format!("region {:#x}", demo["addr"].as_u64().expect("addr"));
    assert!(
        children.contains(region.as_str()),
        "no {region} in {children:?}"
    );
    assert_eq!(file.regions(), 1, "the region's life is a slice");
}

#[test]
fn export_perfetto_is_complete_after_ctrl_c() {
    require_root();
    let dir = TempDir::new("perfetto-int");
    let mut child = Command::new(bin())
        .args(["trace", "--quiet", "--output", &dir.arg("t.pftrace")])
        .args([
            "--format",
            "perfetto",
            "--",
            bin(),
            "demo",
            "--size",
            "64MiB",
        ])
        .args(["--rate", "1MiB/s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tamalloc trace");
    let started = wait_for_line(&mut child, "touched", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill has no memory preconditions; the pid is our live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("wait for tamalloc trace");
    assert!(started, "the demo never started under the tracer");
    assert!(status.success(), "Ctrl-C ends a trace normally: {status}");
    let file = native(&dir.path("t.pftrace"));
    assert_eq!(
        file.regions(),
        1,
        "the region made before Ctrl-C is in the file"
    );
    assert!(file.count(Type::TYPE_INSTANT, "write_zero") > 0);
}

fn tail(s: &str) -> &str {
    let n = s.len().saturating_sub(200);
    s.get(n..).unwrap_or(s)
}

/// A trace interrupted (SIGINT, then SIGKILL) and reaped when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn export_events_are_flushed_per_batch_not_per_refresh() {
    require_root();
    // No refresh for an hour: only the end of each drained batch can write the lines out,
    // and the trace is still running (the shell sleeps) when they must have arrived.
    let script = format!("{} demo --size 256KiB --rate 0; exec sleep 600", bin());
    let mut child = Command::new(bin())
        .args(["trace", "--events", "--quiet", "--interval", "1h"])
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tamalloc trace");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut faults = 0;
    while faults < 64 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains(" write_zero ") => faults += 1,
            Ok(_) => {}
            Err(e) => panic!("only {faults} of 64 fault lines arrived while tracing: {e}"),
        }
    }
    let mut running = running;
    assert!(
        matches!(running.0.try_wait(), Ok(None)),
        "the lines arrived while the trace ran"
    );
}
