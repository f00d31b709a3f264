//! Chrome JSON trace events (`--format chrome-json`), which <https://ui.perfetto.dev> and
//! `chrome://tracing` open; Perfetto imports this format on a best-effort basis, so
//! [`super::perfetto`] writes its native protobuf instead.
//!
//! The file is the object form `{"traceEvents":[...],"displayTimeUnit":"ms","otherData":{...}}`.
//! Events are streamed as records arrive (nothing but the names already given is kept), and
//! [`Sink::finish`] closes the array and the object, so the file is valid after Ctrl-C too.
//! Timestamps are microseconds of `CLOCK_MONOTONIC` (`ts_ns / 1000`).
//!
//! Per process:
//! - counter tracks (`"ph":"C"`) from `stats` records: `VmRSS KiB`, `VmSize KiB`,
//!   `tamalloc reserved KiB`, `tamalloc resident KiB`, and `pages touched` with one series per
//!   kind (cumulative first touches);
//! - instants (`"ph":"i"`) on the faulting thread for every fault (name = kind), and for
//!   region creation (address and length in args); unmap, mremap, fork, exec and exit are
//!   process-scoped instants;
//! - `process_name` / `thread_name` metadata (`"ph":"M"`) once the command name is known: a
//!   thread's own name when the tracer gave one ([`Sink::thread_name`]), else the process's
//!   with the tid. The file is a function of what the sink is given; nothing else is read.

use std::{
    collections::{HashMap, HashSet},
    io::{self, BufWriter, Write},
};

use serde::Serialize;
use serde_json::{Value, json};

use tamalloc_common::trace::FaultKind;

use crate::tracer::{Sink, decode::TraceEvent, record::Record};

/// One trace event. `s` only for instants, `tid` absent on process-scoped events.
#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    ph: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'a str>,
    args: Value,
}

fn us(ts_ns: u64) -> Option<f64> {
    Some(ts_ns as f64 / 1000.0)
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

pub struct ChromeJson<W: Write> {
    out: BufWriter<W>,
    started: bool,
    first: bool,
    finished: bool,
    /// Command name per pid, once known (named in the trace).
    comms: HashMap<u32, String>,
    /// Threads seen, and whether each has been named.
    threads: HashMap<(u32, u32), bool>,
    /// Names of threads (not leaders) as the tracer gave them.
    thread_names: HashMap<(u32, u32), String>,
    /// Fields of the `meta` and `drops` records, written as `otherData` at the end.
    other: serde_json::Map<String, Value>,
    /// Processes with a fault or region on a thread not yet named.
    unnamed: HashSet<u32>,
}

impl<W: Write> ChromeJson<W> {
    pub fn new(w: W) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, w),
            started: false,
            first: true,
            finished: false,
            comms: HashMap::new(),
            threads: HashMap::new(),
            thread_names: HashMap::new(),
            other: serde_json::Map::new(),
            unnamed: HashSet::new(),
        }
    }

    fn start(&mut self) -> io::Result<()> {
        if !self.started {
            self.started = true;
            self.out.write_all(b"{\"traceEvents\":[\n")?;
        }
        Ok(())
    }

    fn write(&mut self, ev: &Event<'_>) -> io::Result<()> {
        self.start()?;
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, ev)?;
        Ok(())
    }

    fn meta(&mut self, name: &str, pid: u32, tid: Option<u32>, value: &str) -> io::Result<()> {
        self.write(&Event {
            name,
            ph: "M",
            // Optional for metadata, but some consumers want every event to have one.
            ts: Some(0.0),
            pid,
            tid,
            s: None,
            cat: None,
            args: json!({ "name": value }),
        })
    }

    fn counter(&mut self, name: &str, ts_ns: u64, pid: u32, args: Value) -> io::Result<()> {
        self.write(&Event {
            name,
            ph: "C",
            ts: us(ts_ns),
            pid,
            tid: None,
            s: None,
            cat: None,
            args,
        })
    }

    fn instant(
        &mut self,
        name: &str,
        ts_ns: u64,
        pid: u32,
        tid: Option<u32>,
        args: Value,
    ) -> io::Result<()> {
        self.write(&Event {
            name,
            ph: "i",
            ts: us(ts_ns),
            pid,
            tid,
            s: Some(if tid.is_some() { "t" } else { "p" }),
            cat: Some("tamalloc"),
            args,
        })
    }

    /// Notes a thread, naming it if its process's name is known.
    fn thread(&mut self, pid: u32, tid: u32) -> io::Result<()> {
        if self.threads.get(&(pid, tid)).copied().unwrap_or(false) {
            return Ok(());
        }
        match self.comms.get(&pid).cloned() {
            Some(comm) => {
                self.threads.insert((pid, tid), true);
                let name = match self.thread_names.get(&(pid, tid)) {
                    _ if tid == pid => comm,
                    Some(own) => own.clone(),
                    None => format!("{comm} {tid}"),
                };
                self.meta("thread_name", pid, Some(tid), &name)?;
            }
            None => {
                self.threads.insert((pid, tid), false);
                self.unnamed.insert(pid);
            }
        }
        Ok(())
    }

    /// Names a process (again if its name changed) and its threads not named yet.
    fn process(&mut self, pid: u32, comm: &str) -> io::Result<()> {
        if comm.is_empty() || self.comms.get(&pid).is_some_and(|c| c == comm) {
            return Ok(());
        }
        self.comms.insert(pid, comm.to_owned());
        self.meta("process_name", pid, None, comm)?;
        if self.unnamed.remove(&pid) {
            let mut tids: Vec<u32> = self
                .threads
                .iter()
                .filter(|((p, _), named)| *p == pid && !**named)
                .map(|((_, t), _)| *t)
                .collect();
            tids.sort_unstable();
            for tid in tids {
                self.thread(pid, tid)?;
            }
        }
        Ok(())
    }
}

impl<W: Write> ChromeJson<W> {
    /// An instant on the event's thread (faults, regions) or process (the rest).
    fn event(&mut self, ev: &TraceEvent) -> io::Result<()> {
        let (name, tid, args) = match *ev {
            TraceEvent::Region {
                tid,
                addr,
                len,
                fallback,
                ..
            } => (
                "region",
                Some(tid),
                json!({ "addr": hex(addr), "len": len, "fallback": fallback }),
            ),
            TraceEvent::Fault {
                tid,
                kind,
                addr,
                region,
                page,
                ..
            } => (
                kind.name(),
                Some(tid),
                json!({ "addr": hex(addr), "region": hex(region), "page": page }),
            ),
            TraceEvent::Unmap {
                addr,
                len,
                region_bytes,
                ..
            } => (
                "munmap",
                None,
                json!({ "addr": hex(addr), "len": len, "region_bytes": region_bytes }),
            ),
            TraceEvent::Remap {
                old_addr,
                old_len,
                new_addr,
                new_len,
                ..
            } => (
                "mremap",
                None,
                json!({
                    "old_addr": hex(old_addr), "old_len": old_len,
                    "new_addr": hex(new_addr), "new_len": new_len,
                }),
            ),
            TraceEvent::Fork { child, .. } => ("fork", None, json!({ "child": child })),
            TraceEvent::Exec { .. } => ("exec", None, json!({})),
            TraceEvent::Exit { .. } => ("exit", None, json!({})),
        };
        let pid = ev.pid();
        if let Some(tid) = tid {
            self.thread(pid, tid)?;
        }
        self.instant(name, ev.ts_ns(), pid, tid, args)
    }
}

impl<W: Write> Sink for ChromeJson<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        match r {
            // Chrome JSON has no callstack samples: stacks are in the other formats.
            Record::Stack { .. } => Ok(()),
            Record::Meta { .. } | Record::Drops { .. } => {
                if let Value::Object(mut m) = serde_json::to_value(r)? {
                    let ty = m.remove("type");
                    let key = match ty.as_ref().and_then(Value::as_str) {
                        Some("drops") => "drops",
                        _ => "meta",
                    };
                    self.other.insert(key.to_owned(), Value::Object(m));
                }
                self.start()
            }
            Record::Event(ev) => self.event(ev),
            Record::Stats {
                ts_ns,
                pid,
                comm,
                vm_size_kib,
                vm_rss_kib,
                tamalloc_reserved_kib,
                tamalloc_resident_kib,
                reserved_bytes,
                ..
            } => {
                let (ts, pid) = (*ts_ns, *pid);
                self.process(pid, comm)?;
                self.counter("VmRSS", ts, pid, json!({ "KiB": vm_rss_kib }))?;
                self.counter("VmSize", ts, pid, json!({ "KiB": vm_size_kib }))?;
                // The tracer's own count, or the kernel's when it knows more (syscall 555).
                let reserved = (*reserved_bytes / 1024).max(*tamalloc_reserved_kib);
                self.counter("tamalloc reserved", ts, pid, json!({ "KiB": reserved }))?;
                self.counter(
                    "tamalloc resident",
                    ts,
                    pid,
                    json!({ "KiB": tamalloc_resident_kib }),
                )?;
                let touched = FaultKind::ALL
                    .iter()
                    .zip(r.faults().unwrap_or_default())
                    .map(|(k, n)| (k.name().to_owned(), n.into()))
                    .collect();
                self.counter("pages touched", ts, pid, Value::Object(touched))
            }
            Record::Summary { pid, comm, .. } => self.process(*pid, comm),
            // Per-region totals go with the trace's metadata (`otherData.regions`).
            Record::RegionSummary { .. } => {
                if let Value::Object(mut m) = serde_json::to_value(r)? {
                    m.remove("type");
                    let list = self
                        .other
                        .entry("regions".to_owned())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.push(Value::Object(m));
                    }
                }
                Ok(())
            }
            Record::Global { .. } => self.start(),
        }
    }

    fn thread_name(&mut self, pid: u32, tid: u32, name: &str) {
        self.thread_names.insert((pid, tid), name.to_owned());
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.start()?;
        self.out
            .write_all(b"\n],\"displayTimeUnit\":\"ms\",\"otherData\":")?;
        serde_json::to_writer(&mut self.out, &self.other)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()
    }
}

impl<W: Write> Drop for ChromeJson<W> {
    /// A session that ends on an error still leaves a file that opens.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(records: &[Record]) -> Value {
        let mut buf = Vec::new();
        {
            let mut sink = ChromeJson::new(&mut buf);
            for r in records {
                sink.record(r).expect("record");
            }
            sink.finish().expect("finish");
        }
        serde_json::from_slice(&buf)
            .unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{}", String::from_utf8_lossy(&buf)))
    }

    #[test]
    fn empty_trace_is_valid() {
        let v = render(&[]);
        assert_eq!(v["traceEvents"].as_array().map(Vec::len), Some(0));
        assert_eq!(v["displayTimeUnit"], "ms");
    }

    #[test]
    fn dropping_without_finish_still_closes_the_object() {
        let mut buf = Vec::new();
        {
            let mut sink = ChromeJson::new(&mut buf);
            sink.record(&Record::Event(TraceEvent::Exit {
                ts_ns: 1500,
                pid: 3,
            }))
            .expect("record");
        }
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(v["traceEvents"][0]["ts"], 1.5);
        assert_eq!(v["traceEvents"][0]["s"], "p");
    }

    #[test]
    fn threads_are_named_as_the_tracer_says() {
        let fault = |tid| {
            Record::Event(TraceEvent::Fault {
                ts_ns: 1000,
                pid: 9,
                tid,
                kind: FaultKind::ReadZero,
                addr: 4096,
                region: 4096,
                page: 0,
                error_code: 0,
            })
        };
        let mut buf = Vec::new();
        {
            let mut sink = ChromeJson::new(&mut buf);
            sink.thread_name(9, 10, "worker");
            for r in [
                fault(10),
                fault(11),
                Record::summary(9, "demo".into(), &Default::default()),
            ] {
                sink.record(&r).expect("record");
            }
            sink.finish().expect("finish");
        }
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        let names: Vec<(u64, &str)> = v["traceEvents"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| {
                (
                    e["tid"].as_u64().unwrap_or(0),
                    e["args"]["name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(names, [(10, "worker"), (11, "demo 11")]);
    }

    #[test]
    fn threads_seen_before_the_name_are_named_later() {
        let v = render(&[
            Record::Event(TraceEvent::Fault {
                ts_ns: 1000,
                pid: 9,
                tid: 9,
                kind: tamalloc_common::trace::FaultKind::WriteZero,
                addr: 4096,
                region: 4096,
                page: 0,
                error_code: 0,
            }),
            Record::Summary {
                pid: 9,
                comm: "demo".into(),
                read_zero: 0,
                write_zero: 1,
                cow_zero: 0,
                cow: 0,
                other: 0,
                regions: 1,
                huge_faults: 0,
            },
        ]);
        let evs = v["traceEvents"].as_array().expect("array");
        assert_eq!(evs.len(), 3, "{evs:?}");
        assert_eq!(evs[0]["ph"], "i");
        assert_eq!(evs[0]["s"], "t");
        assert_eq!(evs[0]["args"]["addr"], "0x1000");
        assert_eq!(evs[1]["name"], "process_name");
        assert_eq!(evs[2]["name"], "thread_name");
        assert_eq!(evs[2]["args"]["name"], "demo");
    }
}
