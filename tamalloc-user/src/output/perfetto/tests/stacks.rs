//! First-touch stacks: the heap profile dump, decoded and resolved as the trace processor
//! resolves it (its own tables, call paths root first, mapping names from path components).

use std::collections::BTreeMap;

use perfetto_protos::profile_packet::ProfilePacket;

use super::*;

const LIBC: &str = "/usr/lib/libc.so.6";
const LIBC_ID: &str = "0aff10c289da5071a3399de893d2af81d6a30c62";
/// A program of the synthetic stacks (not one the tests run).
const DEMO: &str = "/opt/demo/demo";
const KERNEL_PC: u64 = 0xffff_ffff_8100_0010;

fn stack(
    pid: u32,
    comm: &str,
    region: u64,
    kinds: &[(&str, u64)],
    frames: serde_json::Value,
) -> serde_json::Value {
    let mut r = json!({"type": "stack", "pid": pid, "comm": comm, "region": region,
                       "read_zero": 0, "write_zero": 0, "cow_zero": 0, "cow": 0, "other": 0,
                       "frames": frames});
    for &(k, n) in kinds {
        r[k] = json!(n);
    }
    r
}

/// Stacks of two processes: one call path in two regions (summed), one with two kinds, one
/// through the kernel with an unsymbolized user frame, frames with and without a module or
/// a build ID (one not hex), and one with no frames.
fn stacks() -> Vec<serde_json::Value> {
    let fill = json!([
        {"addr": 0x7f00_0000_0100_u64, "function": "__memset", "module": LIBC,
         "build_id": LIBC_ID, "file_offset": 0x100},
        {"addr": 0x5500_0000_0200_u64, "function": "fill_buffer", "module": DEMO,
         "file_offset": 0x200},
        {"addr": 0x5500_0000_0300_u64, "function": "main", "module": DEMO, "file_offset": 0x300},
    ]);
    let kernel = json!([
        {"addr": KERNEL_PC, "kernel": true, "function": "rep_movs_alternative"},
        {"addr": KERNEL_PC + 0x10, "kernel": true, "function": "_copy_to_user"},
        {"addr": 0x5500_0000_0444_u64, "module": DEMO, "file_offset": 0x444},
        {"addr": 0x5500_0000_0300_u64, "function": "main", "module": DEMO, "file_offset": 0x300},
    ]);
    vec![
        stack(
            9,
            "demo",
            0x10000,
            &[("read_zero", 1), ("write_zero", 3)],
            fill.clone(),
        ),
        stack(9, "demo", 0x20000, &[("write_zero", 2)], fill.clone()),
        stack(9, "demo", 0x10000, &[("cow_zero", 4)], kernel),
        stack(
            9,
            "demo",
            0,
            &[("other", 1)],
            json!([{"addr": 0xdead000, "module": "/opt/x.so", "build_id": "not hex"}]),
        ),
        stack(12, "child", 0x10000, &[("write_zero", 7)], fill),
        stack(
            12,
            "child",
            0x10000,
            &[("read_zero", 2)],
            json!([{"addr": 0x4000}]),
        ),
        stack(12, "child", 0x10000, &[("other", 1)], json!([])),
    ]
}

/// The small session with the stacks where `--stacks` puts them: before `drops`.
fn with_stacks() -> Vec<Record> {
    let mut rs = session();
    let drops = rs.pop().expect("the session ends with drops");
    rs.extend(records(&stacks()));
    rs.push(drops);
    rs
}

/// A dump resolved: (pid, heap, call path root first, pages, bytes) per sample, and every
/// frame as (name, mapping, build ID in hex, rel_pc).
struct Resolved {
    samples: Vec<(u64, String, String, u64, u64)>,
    frames: Vec<(String, String, String, u64)>,
    tables: [usize; 4],
}

/// Resolves `p` by its own tables, checking their ids: from 1 in order, string 0 (the empty
/// string) never defined, every reference defined.
fn resolve(p: &ProfilePacket) -> Resolved {
    let mut strings = BTreeMap::from([(0, Vec::new())]);
    for (i, s) in p.strings.iter().enumerate() {
        assert_eq!(s.iid(), i as u64 + 1, "string ids in order from 1");
        strings.insert(s.iid(), s.str().to_vec());
    }
    let text = |id: u64| String::from_utf8(strings[&id].clone()).expect("utf-8");
    let mut mappings = BTreeMap::new();
    for (i, m) in p.mappings.iter().enumerate() {
        assert_eq!(m.iid(), i as u64 + 1, "mapping ids in order from 1");
        // The trace processor's name: '/' before each component, "//" made "/".
        let mut name: String = m
            .path_string_ids
            .iter()
            .map(|&id| format!("/{}", text(id)))
            .collect();
        if name.starts_with("//") {
            name.remove(0);
        }
        let build_id: String = strings[&m.build_id()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        mappings.insert(m.iid(), (name, build_id));
    }
    let mut frames = BTreeMap::new();
    for (i, f) in p.frames.iter().enumerate() {
        assert_eq!(f.iid(), i as u64 + 1, "frame ids in order from 1");
        let (mapping, build_id) = mappings[&f.mapping_id()].clone();
        frames.insert(
            f.iid(),
            (text(f.function_name_id()), mapping, build_id, f.rel_pc()),
        );
    }
    let mut callstacks = BTreeMap::new();
    for (i, c) in p.callstacks.iter().enumerate() {
        assert_eq!(c.iid(), i as u64 + 1, "callstack ids in order from 1");
        let names: Vec<&str> = c.frame_ids.iter().map(|id| frames[id].0.as_str()).collect();
        callstacks.insert(c.iid(), names.join(";"));
    }
    let mut samples = Vec::new();
    for d in &p.process_dumps {
        for s in &d.samples {
            assert!(
                !s.has_self_freed() && !s.has_free_count(),
                "nothing is freed"
            );
            samples.push((
                d.pid(),
                d.heap_name().to_owned(),
                callstacks[&s.callstack_id()].clone(),
                s.alloc_count(),
                s.self_allocated(),
            ));
        }
    }
    Resolved {
        samples,
        frames: frames.into_values().collect(),
        tables: [
            p.strings.len(),
            p.mappings.len(),
            p.frames.len(),
            p.callstacks.len(),
        ],
    }
}

/// The file's profile packets, each with its time, after checking the clock snapshot before
/// it says `CLOCK_MONOTONIC_COARSE` (the dumps' clock) reads as `CLOCK_MONOTONIC` then.
fn dumps(d: &Decoded) -> Vec<(u64, &ProfilePacket)> {
    let mut out = Vec::new();
    for (i, p) in d.packets.iter().enumerate() {
        if !p.has_profile_packet() {
            continue;
        }
        let ts = p.timestamp();
        let clocks: Vec<(u32, u64)> = d.packets[i - 1]
            .clock_snapshot()
            .clocks
            .iter()
            .map(|c| (c.clock_id(), c.timestamp()))
            .collect();
        assert_eq!(
            clocks,
            [
                (BuiltinClock::BUILTIN_CLOCK_MONOTONIC as u32, ts),
                (BuiltinClock::BUILTIN_CLOCK_MONOTONIC_COARSE as u32, ts),
            ],
            "packet {i}: the clocks of its dump"
        );
        let profile = p.profile_packet();
        for dump in &profile.process_dumps {
            assert_eq!(dump.timestamp(), ts, "packet {i}: the dump's time");
        }
        assert!(!profile.continued(), "packet {i}: each dump is whole");
        out.push((ts, profile));
    }
    out
}

fn sample(pid: u64, kind: &str, path: &str, pages: u64) -> (u64, String, String, u64, u64) {
    (
        pid,
        format!("tamalloc.{kind}"),
        format!("{path}[{kind}]"),
        pages,
        pages * 4096,
    )
}

#[test]
fn stacks_are_one_heap_profile_dump_before_drops() {
    let d = decode(&render(&with_stacks(), &[]));
    let found = dumps(&d);
    assert_eq!(found.len(), 1);
    let (ts, profile) = found[0];
    assert_eq!(ts, 9000, "at the last time seen");
    assert_eq!(profile.index(), 0);
    // The dump comes after the region summaries, and the drops instant after it.
    let at = d.packets.iter().position(|p| p.has_profile_packet());
    assert_eq!(at, Some(d.packets.len() - 2));
    assert_eq!(d.events.last().map(|e| e.name.as_str()), Some("drops"));

    let r = resolve(profile);
    let main = "main;fill_buffer;__memset;";
    assert_eq!(
        r.samples,
        [
            sample(9, "read_zero", main, 1),
            sample(9, "write_zero", main, 5),
            sample(
                9,
                "cow_zero",
                "main;demo+0x444;_copy_to_user;rep_movs_alternative;",
                4
            ),
            sample(9, "other", "0xdead000;", 1),
            sample(12, "read_zero", "0x4000;", 2),
            sample(12, "write_zero", main, 7),
            sample(12, "other", "", 1),
        ]
    );
    let frame = |name: &str, mapping: &str, build_id: &str, rel_pc: u64| {
        (
            name.to_owned(),
            mapping.to_owned(),
            build_id.to_owned(),
            rel_pc,
        )
    };
    let kind = |k: &str, i: u64| frame(&format!("[{k}]"), "/[tamalloc]", "", i);
    assert_eq!(
        r.frames,
        [
            frame("main", DEMO, "", 0x300),
            frame("fill_buffer", DEMO, "", 0x200),
            frame("__memset", LIBC, LIBC_ID, 0x100),
            kind("read_zero", 0),
            kind("write_zero", 1),
            frame("demo+0x444", DEMO, "", 0x444),
            frame("_copy_to_user", "/[kernel.kallsyms]", "", KERNEL_PC + 0x10),
            frame("rep_movs_alternative", "/[kernel.kallsyms]", "", KERNEL_PC),
            kind("cow_zero", 2),
            // A build ID that is not hex is left out, not written as garbage.
            frame("0xdead000", "/opt/x.so", "", 0xdead000),
            kind("other", 4),
            frame("0x4000", "/[unknown]", "", 0x4000),
        ]
    );
    // Each table holds each entry once: 12 function names, 9 path components (usr, lib,
    // libc.so.6, opt, demo, x.so, [kernel.kallsyms], [tamalloc], [unknown]) and one build
    // ID; 6 mappings; the 12 frames; 6 call paths (pid 12's write_zero path is pid 9's).
    assert_eq!(r.tables, [22, 6, 12, 6]);

    // The process is named by its stack record when nothing else named it.
    assert_eq!(d.tracks[&d.process(12)].process.process_name(), "child");
}

#[test]
fn stacks_without_drops_are_dumped_at_the_end_and_later_ones_again() {
    let mut buf = Vec::new();
    {
        let mut sink = Perfetto::new(&mut buf);
        let rs = with_stacks();
        // Up to the stacks: no drops record follows them.
        for r in &rs[..rs.len() - 1] {
            sink.record(r).expect("record");
        }
        sink.finish().expect("finish");
    }
    let d = decode(&buf);
    let found = dumps(&d);
    assert_eq!(found.len(), 1);
    assert_eq!(resolve(found[0].1).samples.len(), 7);

    // A stack after the dump: a second dump, with the next index and running totals (what
    // the trace processor expects of heapprofd's dumps: it adds their differences).
    let one = records(&stacks()[1..2]);
    let mut rs = one.clone();
    rs.push(session().pop().expect("drops"));
    rs.extend(one);
    let d = decode(&render(&rs, &[]));
    let found = dumps(&d);
    let totals: Vec<(u64, Vec<_>)> = found
        .iter()
        .map(|(_, p)| (p.index(), resolve(p).samples))
        .collect();
    let main = "main;fill_buffer;__memset;";
    assert_eq!(
        totals,
        [
            (0, vec![sample(9, "write_zero", main, 2)]),
            (1, vec![sample(9, "write_zero", main, 4)]),
        ]
    );
}

#[test]
fn no_stacks_no_profile() {
    let d = decode(&render(&session(), &[]));
    assert!(dumps(&d).is_empty());
    let snapshots = d.packets.iter().filter(|p| p.has_clock_snapshot()).count();
    assert_eq!(snapshots, 1, "only the sequence's first packet's");
}

#[test]
fn stacks_render_the_same_twice() {
    let (a, b) = (render(&with_stacks(), &[]), render(&with_stacks(), &[]));
    assert!(a == b, "two renderings of one session's stacks differ");
}
