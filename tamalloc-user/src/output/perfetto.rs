//! Chrome JSON trace events, which <https://ui.perfetto.dev> and `chrome://tracing` open.
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
//! - `process_name` / `thread_name` metadata (`"ph":"M"`) once the command name is known.

use std::{
    collections::{HashMap, HashSet},
    io::{self, BufWriter, Write},
};

use serde::Serialize;
use serde_json::{Value, json};

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

pub struct Perfetto<W: Write> {
    out: BufWriter<W>,
    started: bool,
    first: bool,
    finished: bool,
    /// Command name per pid, once known (named in the trace).
    comms: HashMap<u32, String>,
    /// Threads seen, and whether each has been named.
    threads: HashMap<(u32, u32), bool>,
    /// Fields of the `meta` and `drops` records, written as `otherData` at the end.
    other: serde_json::Map<String, Value>,
    /// Processes with a fault or region on a thread not yet named.
    unnamed: HashSet<u32>,
}

impl<W: Write> Perfetto<W> {
    pub fn new(w: W) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, w),
            started: false,
            first: true,
            finished: false,
            comms: HashMap::new(),
            threads: HashMap::new(),
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
                self.meta("thread_name", pid, Some(tid), &thread_name(pid, tid, &comm))?;
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

/// A thread's name: its own from /proc while it lives, else the process's with the tid.
fn thread_name(pid: u32, tid: u32, comm: &str) -> String {
    if tid == pid {
        return comm.to_owned();
    }
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|c| c.trim_end().to_owned())
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("{comm} {tid}"))
}

impl<W: Write> Sink for Perfetto<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        match r {
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
            Record::Event(TraceEvent::Region {
                ts_ns,
                pid,
                tid,
                addr,
                len,
                fallback,
            }) => {
                self.thread(*pid, *tid)?;
                self.instant(
                    "region",
                    *ts_ns,
                    *pid,
                    Some(*tid),
                    json!({ "addr": hex(*addr), "len": len, "fallback": fallback }),
                )
            }
            Record::Event(TraceEvent::Fault {
                ts_ns,
                pid,
                tid,
                kind,
                addr,
                region,
                page,
                ..
            }) => {
                self.thread(*pid, *tid)?;
                self.instant(
                    kind.name(),
                    *ts_ns,
                    *pid,
                    Some(*tid),
                    json!({ "addr": hex(*addr), "region": hex(*region), "page": page }),
                )
            }
            Record::Event(TraceEvent::Unmap {
                ts_ns,
                pid,
                addr,
                len,
                region_bytes,
            }) => self.instant(
                "munmap",
                *ts_ns,
                *pid,
                None,
                json!({ "addr": hex(*addr), "len": len, "region_bytes": region_bytes }),
            ),
            Record::Event(TraceEvent::Remap {
                ts_ns,
                pid,
                old_addr,
                old_len,
                new_addr,
                new_len,
            }) => self.instant(
                "mremap",
                *ts_ns,
                *pid,
                None,
                json!({
                    "old_addr": hex(*old_addr), "old_len": old_len,
                    "new_addr": hex(*new_addr), "new_len": new_len,
                }),
            ),
            Record::Event(TraceEvent::Fork { ts_ns, pid, child }) => {
                self.instant("fork", *ts_ns, *pid, None, json!({ "child": child }))
            }
            Record::Event(TraceEvent::Exec { ts_ns, pid }) => {
                self.instant("exec", *ts_ns, *pid, None, json!({}))
            }
            Record::Event(TraceEvent::Exit { ts_ns, pid }) => {
                self.instant("exit", *ts_ns, *pid, None, json!({}))
            }
            Record::Stats {
                ts_ns,
                pid,
                comm,
                vm_size_kib,
                vm_rss_kib,
                tamalloc_reserved_kib,
                tamalloc_resident_kib,
                read_zero,
                write_zero,
                cow_zero,
                cow,
                other,
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
                self.counter(
                    "pages touched",
                    ts,
                    pid,
                    json!({
                        "read_zero": read_zero, "write_zero": write_zero,
                        "cow_zero": cow_zero, "cow": cow, "other": other,
                    }),
                )
            }
            Record::Summary { pid, comm, .. } => self.process(*pid, comm),
            Record::Global { .. } => self.start(),
        }
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

impl<W: Write> Drop for Perfetto<W> {
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
            let mut sink = Perfetto::new(&mut buf);
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
            let mut sink = Perfetto::new(&mut buf);
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
