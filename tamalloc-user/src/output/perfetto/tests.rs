//! The exporter's file, decoded with the protos it was written with: framing, the sequence's
//! rules (first packet, incremental state, interning before use, descriptors before use) and
//! what each record became. The stacks' heap profile is checked in [`stacks`].

mod stacks;

use std::collections::{BTreeMap, BTreeSet};

use perfetto_protos::{
    builtin_clock::BuiltinClock, trace::Trace, trace_packet::TracePacket,
    trace_packet::trace_packet::SequenceFlags, track_descriptor::TrackDescriptor,
    track_event::track_event::Type,
};
use protobuf::Message as _;
use serde_json::json;

use super::*;

/// Records from their JSON lines (the schema every exporter is fed).
fn records(lines: &[serde_json::Value]) -> Vec<Record> {
    lines
        .iter()
        .map(|l| serde_json::from_value(l.clone()).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn render(records: &[Record], names: &[(u32, u32, &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut sink = Perfetto::new(&mut buf);
        for &(pid, tid, name) in names {
            sink.thread_name(pid, tid, name);
        }
        for r in records {
            sink.record(r).expect("record");
        }
        sink.finish().expect("finish");
    }
    buf
}

/// A decoded file, checked against the sequence's rules as it is read.
#[derive(Default)]
struct Decoded {
    packets: Vec<TracePacket>,
    event_names: BTreeMap<u64, String>,
    annotation_names: BTreeMap<u64, String>,
    strings: BTreeMap<u64, String>,
    /// Every descriptor, by uuid, as last given.
    tracks: BTreeMap<u64, TrackDescriptor>,
    /// (type, track uuid, name, annotations by name, timestamp, counter value).
    events: Vec<Ev>,
}

#[derive(Clone, Debug)]
struct Ev {
    ty: Type,
    track: u64,
    name: String,
    args: BTreeMap<String, String>,
    ts: u64,
    value: i64,
}

fn decode(buf: &[u8]) -> Decoded {
    let trace = Trace::parse_from_bytes(buf).expect("the file is a Trace");
    let mut d = Decoded::default();
    for (i, p) in trace.packet.iter().enumerate() {
        assert_eq!(
            p.trusted_packet_sequence_id(),
            1,
            "packet {i}: one sequence"
        );
        if i == 0 {
            assert!(p.first_packet_on_sequence(), "packet 0 opens the sequence");
            assert_eq!(
                p.sequence_flags(),
                SequenceFlags::SEQ_INCREMENTAL_STATE_CLEARED as u32
            );
            assert_eq!(
                p.trace_packet_defaults.timestamp_clock_id(),
                BuiltinClock::BUILTIN_CLOCK_MONOTONIC as u32
            );
            assert_eq!(
                p.clock_snapshot().primary_trace_clock(),
                BuiltinClock::BUILTIN_CLOCK_MONOTONIC
            );
        } else {
            assert!(!p.first_packet_on_sequence(), "packet {i}");
        }
        if let Some(data) = p.interned_data.as_ref() {
            for n in &data.event_names {
                assert!(d.event_names.insert(n.iid(), n.name().into()).is_none());
            }
            for n in &data.debug_annotation_names {
                assert!(
                    d.annotation_names
                        .insert(n.iid(), n.name().into())
                        .is_none()
                );
            }
            for s in &data.debug_annotation_string_values {
                let s_ = String::from_utf8_lossy(s.str()).into_owned();
                assert!(d.strings.insert(s.iid(), s_).is_none());
            }
        }
        if p.has_track_descriptor() {
            let t = p.track_descriptor();
            if t.has_parent_uuid() {
                assert!(d.tracks.contains_key(&t.parent_uuid()), "parent first: {t}");
            }
            d.tracks.insert(t.uuid(), t.clone());
        }
        if p.has_track_event() {
            assert!(i > 1, "events come after the sequence's first packets");
            assert_eq!(
                p.sequence_flags(),
                SequenceFlags::SEQ_NEEDS_INCREMENTAL_STATE as u32
            );
            let e = p.track_event();
            assert!(
                d.tracks.contains_key(&e.track_uuid()),
                "packet {i}: track {} described first",
                e.track_uuid()
            );
            let name = if e.has_name_iid() {
                d.event_names
                    .get(&e.name_iid())
                    .unwrap_or_else(|| panic!("packet {i}: name iid {} interned", e.name_iid()))
                    .clone()
            } else {
                String::new()
            };
            let mut args = BTreeMap::new();
            for a in &e.debug_annotations {
                let k = d.annotation_names[&a.name_iid()].clone();
                let v = if a.has_pointer_value() {
                    format!("{:#x}", a.pointer_value())
                } else if a.has_uint_value() {
                    a.uint_value().to_string()
                } else if a.has_bool_value() {
                    a.bool_value().to_string()
                } else {
                    d.strings[&a.string_value_iid()].clone()
                };
                args.insert(k, v);
            }
            d.events.push(Ev {
                ty: e.type_(),
                track: e.track_uuid(),
                name,
                args,
                ts: p.timestamp(),
                value: e.counter_value(),
            });
        }
        d.packets.push(p.clone());
    }
    d
}

impl Decoded {
    /// The uuid of the track named `name` (a track's own name, or a thread's).
    fn track(&self, name: &str) -> u64 {
        self.find(|t| {
            t.name() == name || t.thread.as_ref().is_some_and(|th| th.thread_name() == name)
        })
    }

    fn process(&self, pid: i32) -> u64 {
        self.find(|t| t.process.as_ref().is_some_and(|p| p.pid() == pid))
    }

    fn thread(&self, tid: i32) -> u64 {
        self.find(|t| t.thread.as_ref().is_some_and(|th| th.tid() == tid))
    }

    fn find(&self, f: impl Fn(&TrackDescriptor) -> bool) -> u64 {
        self.tracks
            .values()
            .find(|t| f(t))
            .map(TrackDescriptor::uuid)
            .unwrap_or_else(|| panic!("no such track in {:?}", self.tracks.values()))
    }

    fn on(&self, track: u64) -> Vec<&Ev> {
        self.events.iter().filter(|e| e.track == track).collect()
    }
}

/// A small session: one process, two threads, a region made, touched and unmapped.
fn session() -> Vec<Record> {
    let fault = |ts: u64, tid: u32, kind: &str, page: u64| {
        json!({"type": "fault", "ts_ns": ts, "pid": 9, "tid": tid, "kind": kind,
               "addr": 0x10000 + page * 4096, "region": 0x10000, "page": page})
    };
    let stats = |ts: u64, rss: u64, w: u64| {
        json!({"type": "stats", "ts_ns": ts, "pid": 9, "comm": "demo", "vm_size_kib": 9000,
               "vm_rss_kib": rss, "rss_anon_kib": 0, "rss_file_kib": 0, "rss_shmem_kib": 0,
               "oom_score": 0, "oom_score_adj": 0, "resident_permille": 0,
               "tamalloc_regions": 1, "tamalloc_reserved_kib": 64,
               "tamalloc_resident_kib": w * 4, "read_zero": 1, "write_zero": w,
               "cow_zero": 0, "cow": 0, "other": 0, "reserved_bytes": 65536,
               "source": "procfs"})
    };
    records(&[
        json!({"type": "meta", "version": 1, "tool": "tamalloc test", "kernel": "6.18",
               "stats_source": "procfs", "events": true, "mode": "kernel",
               "follows": "tamalloc"}),
        json!({"type": "region", "ts_ns": 1000, "pid": 9, "tid": 9, "addr": 0x10000,
               "len": 65536, "fallback": true, "made_by": "fallback"}),
        fault(2000, 9, "read_zero", 0),
        fault(3000, 10, "write_zero", 1),
        fault(4000, 11, "write_zero", 2),
        stats(5000, 1000, 2),
        fault(6000, 9, "write_zero", 3),
        stats(7000, 1234, 3),
        json!({"type": "unmap", "ts_ns": 8000, "pid": 9, "addr": 0x10000, "len": 65536,
               "region_bytes": 65536}),
        json!({"type": "exit", "ts_ns": 9000, "pid": 9}),
        json!({"type": "summary", "pid": 9, "comm": "demo", "read_zero": 1, "write_zero": 3,
               "cow_zero": 0, "cow": 0, "other": 0, "regions": 1, "huge_faults": 0}),
        json!({"type": "region_summary", "pid": 9, "region": 0x10000, "made_by": "fallback",
               "len": 65536, "read_zero": 1, "write_zero": 3, "cow_zero": 0, "cow": 0,
               "other": 0}),
        json!({"type": "drops", "count": 0, "fault_events": 0, "control_events": 0,
               "map_full": 0, "traced_full": 0, "region_cut": 0}),
    ])
}

#[test]
fn a_session_decodes_into_its_tracks_and_events() {
    let buf = render(&session(), &[(9, 10, "worker")]);
    let d = decode(&buf);

    // Faults: instants on their threads, named by kind, with their annotations.
    let faults: Vec<&Ev> = d
        .events
        .iter()
        .filter(|e| e.ty == Type::TYPE_INSTANT && e.name.ends_with("_zero"))
        .collect();
    assert_eq!(faults.len(), 4);
    let leader = d.thread(9);
    assert_eq!(d.tracks[&leader].thread.thread_name(), "demo");
    let on_leader: Vec<&str> = d.on(leader).iter().map(|e| e.name.as_str()).collect();
    assert_eq!(on_leader, ["read_zero", "write_zero"]);
    let worker = d.on(d.track("worker"));
    assert_eq!(worker.len(), 1);
    let args = &worker[0].args;
    assert_eq!(args["addr"], "0x11000");
    assert_eq!(args["region"], "0x10000");
    assert_eq!(args["page"], "1");
    assert_eq!(args["kind"], "write_zero");
    // A thread seen before its process was named is named once the name is known.
    assert_eq!(d.tracks[&d.thread(11)].thread.thread_name(), "demo");
    assert_eq!(d.on(d.thread(11)).len(), 1);

    // Counters: bytes for memory, pages by kind; their last values are the last record's.
    let last = |name: &str| d.on(d.track(name)).last().map(|e| (e.ts, e.value));
    assert_eq!(last("VmRSS"), Some((7000, 1234 * 1024)));
    assert_eq!(last("VmSize"), Some((7000, 9000 * 1024)));
    assert_eq!(last("tamalloc reserved"), Some((7000, 65536)));
    assert_eq!(last("tamalloc resident"), Some((7000, 12 * 1024)));
    assert_eq!(last("pages touched write_zero"), Some((7000, 3)));
    assert_eq!(last("pages touched read_zero"), Some((7000, 1)));
    let process = d.process(9);
    assert_eq!(d.tracks[&process].process.process_name(), "demo");
    let vm_rss = &d.tracks[&d.track("VmRSS")];
    assert_eq!(
        vm_rss.parent_uuid(),
        process,
        "counters show with their process"
    );
    assert!(vm_rss.counter.is_some());

    // The region's life: a slice from its creation to the unmap, and its summary.
    let region = d.on(d.track("region 0x10000"));
    let shape: Vec<(Type, u64, &str)> = region
        .iter()
        .map(|e| (e.ty, e.ts, e.name.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            (Type::TYPE_SLICE_BEGIN, 1000, "fallback region"),
            (Type::TYPE_SLICE_END, 8000, ""),
            (Type::TYPE_INSTANT, 9000, "region summary"),
        ]
    );
    assert_eq!(region[0].args["len"], "65536");
    assert_eq!(region[2].args["write_zero"], "3");

    // Process instants, and the trace's own records on the `tamalloc` track.
    let names: Vec<&str> = d.on(process).iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["munmap", "exit"]);
    let own = d.on(d.track("tamalloc"));
    assert_eq!(own.len(), 2);
    assert_eq!((own[0].name.as_str(), own[0].ts), ("meta", 1000));
    assert_eq!(own[0].args["kernel"], "6.18");
    assert_eq!(own[0].args["events"], "true");
    assert_eq!((own[1].name.as_str(), own[1].ts), ("drops", 9000));
    assert_eq!(own[1].args["count"], "0");

    // Strings are interned: each name is defined once however often it is used.
    let unique: BTreeSet<&String> = d.event_names.values().collect();
    assert_eq!(unique.len(), d.event_names.len());
}

#[test]
fn the_file_is_a_function_of_the_records() {
    let a = render(&session(), &[(9, 10, "worker")]);
    let b = render(&session(), &[(9, 10, "worker")]);
    assert!(a == b, "two renderings of one session differ");
}

#[test]
fn an_empty_trace_is_valid() {
    let d = decode(&render(&[], &[]));
    assert_eq!(
        d.packets.len(),
        2,
        "the sequence's first packet, the `tamalloc` track"
    );
    assert!(d.events.is_empty());
}

#[test]
fn dropping_without_finish_leaves_whole_packets() {
    let mut buf = Vec::new();
    {
        let mut sink = Perfetto::new(&mut buf);
        for r in session().iter().take(4) {
            sink.record(r).expect("record");
        }
    }
    let d = decode(&buf);
    assert_eq!(d.events.iter().filter(|e| e.name == "read_zero").count(), 1);
}

#[test]
fn forks_copy_regions_and_exec_ends_them() {
    let rs = records(&[
        json!({"type": "region", "ts_ns": 10, "pid": 5, "tid": 5, "addr": 4096,
               "len": 8192, "fallback": false, "made_by": "tamalloc"}),
        json!({"type": "fork", "ts_ns": 20, "pid": 5, "child": 6}),
        json!({"type": "exec", "ts_ns": 30, "pid": 6}),
        json!({"type": "remap", "ts_ns": 40, "pid": 5, "old_addr": 4096, "old_len": 8192,
               "new_addr": 65536, "new_len": 16384}),
    ]);
    let d = decode(&render(&rs, &[]));
    let slices = |pid: u32| -> Vec<(Type, u64)> {
        let uuid = d
            .tracks
            .values()
            .find(|t| {
                t.name() == "region 0x1000"
                    && d.tracks[&t.parent_uuid()]
                        .process
                        .as_ref()
                        .is_some_and(|p| p.pid() == pid as i32)
            })
            .map(TrackDescriptor::uuid)
            .unwrap_or_else(|| panic!("no region track for {pid}"));
        d.on(uuid).iter().map(|e| (e.ty, e.ts)).collect()
    };
    // The child's copy lives from the fork to its exec; the parent's region moved but
    // lives on (its slice did not end).
    assert_eq!(
        slices(6),
        [(Type::TYPE_SLICE_BEGIN, 20), (Type::TYPE_SLICE_END, 30)]
    );
    assert_eq!(slices(5), [(Type::TYPE_SLICE_BEGIN, 10)]);
}

#[test]
fn a_fault_costs_a_few_dozen_bytes() {
    let base = render(&session()[..3], &[]);
    let more: Vec<Record> = session()[..3]
        .iter()
        .cloned()
        .chain((1..=1000u64).map(|i| {
            Record::Event(TraceEvent::Fault {
                ts_ns: 10_000_000_000_000 + i * 1000,
                pid: 9,
                tid: 9,
                kind: FaultKind::WriteZero,
                addr: 0x7f12_3456_0000 + i * 4096,
                region: 0x7f12_3456_0000,
                page: i,
                error_code: 0,
            })
        }))
        .collect();
    let per_fault = (render(&more, &[]).len() - base.len()) / 1000;
    assert!(per_fault < 70, "{per_fault} bytes per fault");
}

/// Records what each `write` call was given.
#[derive(Default)]
struct Writes {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Write for &mut Writes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        self.ends.push(self.bytes.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_write_ends_on_a_packet_boundary() {
    let mut w = Writes::default();
    {
        let mut sink = Perfetto::new(&mut w);
        for r in &session()[..2] {
            sink.record(r).expect("record");
        }
        for i in 0..5000u64 {
            let ev = TraceEvent::Fault {
                ts_ns: 10_000 + i,
                pid: 9,
                tid: 9,
                kind: FaultKind::WriteZero,
                addr: 0x10000 + i * 4096,
                region: 0x10000,
                page: i,
                error_code: 0,
            };
            sink.record(&Record::Event(ev)).expect("record");
        }
        sink.finish().expect("finish");
    }
    assert!(w.ends.len() > 3, "written in several pieces: {:?}", w.ends);
    // What a kill between two writes leaves: whole packets, every fault before it.
    for &end in &w.ends {
        let trace = Trace::parse_from_bytes(&w.bytes[..end])
            .unwrap_or_else(|e| panic!("cut at {end}: {e}"));
        assert!(trace.packet.len() > 2);
    }
    assert_eq!(
        decode(&w.bytes).events.len(),
        5002,
        "meta, the region, the faults"
    );
}
