//! First-touch stacks as a heap profile: one heapprofd `ProfilePacket`, which Perfetto's
//! trace processor imports into `heap_profile_allocation` (weights by call site) and its
//! UI shows as a process's "Heap Profile" track whose flame graph opens when the trace loads.
//!
//! Why this packet: it is Perfetto's one representation of memory attributed to call sites
//! with a weight per call site (bytes and a count). Callstack samples (`PerfSample`,
//! `StreamingProfilePacket`) carry no weight: they would need a packet per page.
//!
//! - Each (process, kind) is one `ProcessHeapSamples`, its `heap_name` `tamalloc.KIND`; a
//!   sample's `self_allocated` is the pages' bytes and `alloc_count` the pages (nothing is
//!   freed, so the UI's "Unreleased" and "Total" sizes agree).
//! - The kind is also the leaf of every call path, a pseudo-frame `[KIND]` (as in the folded
//!   output): the UI draws one flame graph per process over all of its heaps, so without it
//!   the kinds would add up into one width; with it each call site shows its split by kind.
//!   It also keeps (process, call site) unique per kind, which the trace processor needs (it
//!   tracks a call site's running total per process, not per heap).
//! - Regions are not split: a call path's pages in several regions are summed.
//! - Frames: the function (or [`StackFrame::label`]) is the name; the mapping is the module
//!   with its build ID (raw bytes, as the format wants), `[kernel.kallsyms]` for kernel
//!   frames without one, `[unknown]` for user frames without one, `[tamalloc]` for the kind;
//!   `rel_pc` is the file offset when known, else the address (for kernel frames, the kernel
//!   address; for the kind, its index).
//! - The packet carries its own tables (strings, mappings, frames, callstacks: heapprofd's
//!   layout, ids from 1, the string 0 is empty), which the trace processor drops after the
//!   packet; so a later dump (stacks after the first was written) repeats them, with the next
//!   `index` and running totals, as heapprofd's dumps do.
//! - Source lines are not written. Perfetto's symbol packet (`ModuleSymbols`) wants the
//!   build ID's raw bytes in a proto `string`, which strict decoders (rust-protobuf among
//!   them) reject as not UTF-8, and the UI v52 finds no mapping for symbols of a module
//!   without a build ID (tried: an import error). The `stack` records keep them.
//! - A dump's time is `CLOCK_MONOTONIC_COARSE` by the format; the clock snapshot written
//!   before it says that clock reads as `CLOCK_MONOTONIC` (the trace's) at the dump (the UI
//!   shows it as a "Clock Snapshots" track).

use std::collections::BTreeMap;

use perfetto_protos::{
    builtin_clock::BuiltinClock,
    clock_snapshot::{ClockSnapshot, clock_snapshot::Clock},
    profile_common::{Callstack, Frame, InternedString, Mapping},
    profile_packet::{
        ProfilePacket,
        profile_packet::{HeapSample, ProcessHeapSamples},
    },
    trace_packet::TracePacket,
};
use tamalloc_common::trace::{FaultKind, PAGE_SIZE};

use crate::tracer::record::{Record, StackFrame};

/// The mapping of the kind's pseudo-frame.
pub const KIND_MAPPING: &str = "[tamalloc]";
/// The mapping of kernel frames that name no module.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// The mapping of user frames that name no module.
pub const UNKNOWN_MAPPING: &str = "[unknown]";

/// The heap a kind's pages are in.
pub fn heap_name(kind: FaultKind) -> String {
    format!("tamalloc.{}", kind.name())
}

/// A frame as the profile knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FrameKey {
    module: String,
    /// The GNU build ID's bytes (empty when unknown).
    build_id: Vec<u8>,
    rel_pc: u64,
    name: String,
}

impl FrameKey {
    fn of(f: &StackFrame) -> Self {
        let module = match (&f.module, f.kernel) {
            (Some(m), _) => m.clone(),
            (None, true) => KERNEL_MAPPING.to_owned(),
            (None, false) => UNKNOWN_MAPPING.to_owned(),
        };
        let build_id = f.build_id.as_deref().and_then(unhex).unwrap_or_default();
        let rel_pc = match f.file_offset {
            Some(off) if !f.kernel => off,
            _ => f.addr,
        };
        Self {
            module,
            build_id,
            rel_pc,
            name: f.label(),
        }
    }

    fn kind(kind: FaultKind) -> Self {
        Self {
            module: KIND_MAPPING.to_owned(),
            build_id: Vec::new(),
            rel_pc: kind as u64,
            name: format!("[{}]", kind.name()),
        }
    }
}

/// A build ID's bytes from its hex; `None` when it is not hex.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

/// The stacks given so far: pages by (process, kind, call path root first, kind leaf).
#[derive(Default)]
pub struct Profile {
    pages: BTreeMap<(u32, FaultKind, Vec<FrameKey>), u64>,
    /// Stacks given since the last dump.
    dirty: bool,
    /// The next dump's `index` (the trace processor checks they follow from 0).
    index: u64,
}

impl Profile {
    /// Adds a `stack` record's pages.
    pub fn add(&mut self, r: &Record) {
        let Record::Stack {
            pid,
            read_zero,
            write_zero,
            cow_zero,
            cow,
            other,
            ref frames,
            ..
        } = *r
        else {
            return;
        };
        let path: Vec<FrameKey> = frames.iter().rev().map(FrameKey::of).collect();
        let counts = [read_zero, write_zero, cow_zero, cow, other];
        for (kind, n) in FaultKind::ALL.into_iter().zip(counts) {
            if n == 0 {
                continue;
            }
            let mut path = path.clone();
            path.push(FrameKey::kind(kind));
            let total = self.pages.entry((pid, kind, path)).or_default();
            *total = total.saturating_add(n);
            self.dirty = true;
        }
    }

    /// The packets of a dump at `ts_ns` (`CLOCK_MONOTONIC`) of every stack given so far: the
    /// clock snapshot, then the profile; none when no stack came since the last dump.
    pub fn dump(&mut self, ts_ns: u64) -> Option<[TracePacket; 2]> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        let mut t = Tables::default();
        let mut dumps: Vec<ProcessHeapSamples> = Vec::new();
        for ((pid, kind, path), &pages) in &self.pages {
            let frame_ids = path.iter().map(|f| t.frame(f)).collect();
            let callstack_id = t.callstack(frame_ids);
            let heap = heap_name(*kind);
            let same = dumps
                .last()
                .is_some_and(|d| d.pid() == u64::from(*pid) && d.heap_name() == heap);
            if !same {
                let mut d = ProcessHeapSamples::new();
                d.set_pid((*pid).into());
                d.set_heap_name(heap);
                d.set_timestamp(ts_ns);
                dumps.push(d);
            }
            let mut s = HeapSample::new();
            s.set_callstack_id(callstack_id);
            s.set_self_allocated(pages.saturating_mul(PAGE_SIZE));
            s.set_alloc_count(pages);
            if let Some(d) = dumps.last_mut() {
                d.samples.push(s);
            }
        }
        let mut profile = t.into_packet();
        profile.process_dumps = dumps;
        profile.set_index(self.index);
        self.index += 1;

        let mut snapshot = ClockSnapshot::new();
        for id in [
            BuiltinClock::BUILTIN_CLOCK_MONOTONIC,
            BuiltinClock::BUILTIN_CLOCK_MONOTONIC_COARSE,
        ] {
            let mut c = Clock::new();
            c.set_clock_id(id as u32);
            c.set_timestamp(ts_ns);
            snapshot.clocks.push(c);
        }
        let mut clocks = TracePacket::new();
        clocks.set_clock_snapshot(snapshot);
        let mut p = TracePacket::new();
        p.set_timestamp(ts_ns);
        p.set_profile_packet(profile);
        Some([clocks, p])
    }
}

/// A dump's own tables: each entry gets an id (from 1) when first used.
#[derive(Default)]
struct Tables {
    strings: BTreeMap<Vec<u8>, u64>,
    mappings: BTreeMap<(String, Vec<u8>), u64>,
    frames: BTreeMap<FrameKey, u64>,
    callstacks: BTreeMap<Vec<u64>, u64>,
    packet: ProfilePacket,
}

impl Tables {
    fn string(&mut self, s: &[u8]) -> u64 {
        if s.is_empty() {
            // The trace processor's string 0 is the empty string.
            return 0;
        }
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.strings.len() as u64 + 1;
        self.strings.insert(s.to_vec(), id);
        let mut is = InternedString::new();
        is.set_iid(id);
        is.set_str(s.to_vec());
        self.packet.strings.push(is);
        id
    }

    fn mapping(&mut self, module: &str, build_id: &[u8]) -> u64 {
        let key = (module.to_owned(), build_id.to_vec());
        if let Some(&id) = self.mappings.get(&key) {
            return id;
        }
        let id = self.mappings.len() as u64 + 1;
        self.mappings.insert(key, id);
        let mut m = Mapping::new();
        m.set_iid(id);
        m.set_build_id(self.string(build_id));
        // The trace processor joins the components with '/' after a leading one: a path's
        // components give the path back, a name like `[kernel.kallsyms]` gets a '/'.
        let parts: Vec<&str> = match module.strip_prefix('/') {
            Some(rest) => rest.split('/').filter(|p| !p.is_empty()).collect(),
            None => vec![module],
        };
        m.path_string_ids = parts.iter().map(|p| self.string(p.as_bytes())).collect();
        self.packet.mappings.push(m);
        id
    }

    fn frame(&mut self, f: &FrameKey) -> u64 {
        if let Some(&id) = self.frames.get(f) {
            return id;
        }
        let id = self.frames.len() as u64 + 1;
        self.frames.insert(f.clone(), id);
        let mut fr = Frame::new();
        fr.set_iid(id);
        fr.set_function_name_id(self.string(f.name.as_bytes()));
        fr.set_mapping_id(self.mapping(&f.module, &f.build_id));
        fr.set_rel_pc(f.rel_pc);
        self.packet.frames.push(fr);
        id
    }

    /// A callstack from its frames' ids, root first.
    fn callstack(&mut self, frame_ids: Vec<u64>) -> u64 {
        if let Some(&id) = self.callstacks.get(&frame_ids) {
            return id;
        }
        let id = self.callstacks.len() as u64 + 1;
        let mut c = Callstack::new();
        c.set_iid(id);
        c.frame_ids = frame_ids.clone();
        self.callstacks.insert(frame_ids, id);
        self.packet.callstacks.push(c);
        id
    }

    fn into_packet(self) -> ProfilePacket {
        self.packet
    }
}
