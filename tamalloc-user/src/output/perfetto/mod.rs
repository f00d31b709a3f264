//! Perfetto's native trace format (`--format perfetto`): protobuf `TracePacket`s, which
//! <https://ui.perfetto.dev> and Perfetto's trace processor read as they read their own
//! traces (Chrome JSON, [`super::chrome_json`], is imported on a best-effort basis).
//!
//! The file is one packet sequence (`trusted_packet_sequence_id` 1, [`packet`]). Its first
//! packet clears the sequence's incremental state, sets its default clock to
//! `CLOCK_MONOTONIC` (the tracer's timestamps) and, with a clock snapshot, makes that the
//! trace's clock; then come track descriptors and track events. Names of events, categories, annotations and annotation strings are interned (each
//! string is written once, in the packet that first uses it). Packets are streamed as records
//! arrive, written whole; [`Sink::finish`] flushes, so Ctrl-C leaves a complete file.
//!
//! Tracks:
//! - a process track per traced process (pid, and the command name once known), and a thread
//!   track per faulting thread (the thread's own name when the tracer gave one, else the
//!   process's; Perfetto shows the tid beside it);
//! - per process, counter tracks from `stats` records: `VmRSS`, `VmSize`, `tamalloc
//!   reserved`, `tamalloc resident` (bytes), and `pages touched KIND` for each fault kind
//!   (cumulative first touches);
//! - every fault as an instant on its thread, named by its kind, with `addr`, `region`,
//!   `page` and `kind` annotations;
//! - per region (its identity: the first address it was made at), a track whose slice is the
//!   region's life: from its creation (or the fork that copied it) to the unmap, exec or exit
//!   that ended it (a region still mapped at the end of the trace has a slice that did not
//!   end); its `region_summary` is an instant on it;
//! - munmap, mremap, fork, exec and exit as instants on the process track;
//! - a `tamalloc` track with the `meta` record (at the trace's first time) and the `drops`
//!   record (at its last) as instants with their fields as annotations.
//!
//! First-touch stacks (`stack` records, with `--stacks`) are a heap profile of each process,
//! one dump at the end of the trace (before the `drops` instant): the UI shows it as the
//! process's "Heap Profile" track and opens its flame graph of pages first touched per call
//! site, each call path ending in its kind (`[write_zero]`). [`stacks`] says why this packet
//! and how frames, mappings and kinds are written.
//!
//! The file is a function of what the sink is given (ids are assigned in order of first
//! use, maps are ordered), so a recording converts to exactly what the live export wrote.

mod packet;
mod stacks;
#[cfg(test)]
mod tests;
mod tracks;

use std::{
    collections::BTreeSet,
    io::{self, Write},
};

use perfetto_protos::{
    builtin_clock::BuiltinClock,
    clock_snapshot::ClockSnapshot,
    trace_packet::{TracePacket, trace_packet::SequenceFlags},
    trace_packet_defaults::TracePacketDefaults,
    track_event::track_event::Type,
};
use protobuf::MessageField;
use tamalloc_common::trace::{FAULT_KINDS, FaultKind};

use crate::tracer::{Sink, aggregate::Aggregator, decode::TraceEvent, record::Record};

use packet::{Arg, Event, Interner, PacketWriter};
use tracks::{New, Tracks};

/// The name of the track of the trace's own records.
const GLOBAL_TRACK: &str = "tamalloc";

pub struct Perfetto<W: Write> {
    out: PacketWriter<W>,
    started: bool,
    finished: bool,
    interner: Interner,
    tracks: Tracks,
    /// The events' view of each process's regions: which identities are still mapped.
    regions: Aggregator,
    /// Region slices begun and not ended.
    open: BTreeSet<(u32, u64)>,
    /// The `meta` record, written at the first time seen.
    meta: Option<Record>,
    /// The latest time seen, for records that have none.
    last_ts: u64,
    /// First-touch stacks, written as one dump when the `drops` record (or the end) comes.
    stacks: stacks::Profile,
}

impl<W: Write> Perfetto<W> {
    pub fn new(w: W) -> Self {
        Self {
            out: PacketWriter::new(w),
            started: false,
            finished: false,
            interner: Interner::default(),
            tracks: Tracks::default(),
            regions: Aggregator::new(),
            open: BTreeSet::new(),
            meta: None,
            last_ts: 0,
            stacks: stacks::Profile::default(),
        }
    }

    /// The sequence's first packet: it clears the sequence's incremental state, sets its
    /// default clock and makes that clock the trace's; then the `tamalloc` track.
    fn start(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let monotonic = BuiltinClock::BUILTIN_CLOCK_MONOTONIC;
        let mut snapshot = ClockSnapshot::new();
        snapshot.set_primary_trace_clock(monotonic);
        let mut defaults = TracePacketDefaults::new();
        defaults.set_timestamp_clock_id(monotonic as u32);
        let mut p = TracePacket::new();
        p.set_first_packet_on_sequence(true);
        p.set_sequence_flags(SequenceFlags::SEQ_INCREMENTAL_STATE_CLEARED as u32);
        p.trace_packet_defaults = MessageField::some(defaults);
        p.set_clock_snapshot(snapshot);
        self.out.push(p)?;
        self.track(|t, new| t.global(GLOBAL_TRACK, new)).map(drop)
    }

    /// A track's uuid from `f`, after writing the descriptors `f` made.
    fn track(&mut self, f: impl FnOnce(&mut Tracks, &mut New) -> u64) -> io::Result<u64> {
        self.start()?;
        let mut new = New::new();
        let uuid = f(&mut self.tracks, &mut new);
        for d in new {
            let mut p = TracePacket::new();
            p.set_track_descriptor(d);
            self.out.push(p)?;
        }
        Ok(uuid)
    }

    /// Notes the time of a record; the `meta` instant goes at the first.
    fn at(&mut self, ts_ns: u64) -> io::Result<()> {
        self.start()?;
        self.last_ts = self.last_ts.max(ts_ns);
        if let Some(Record::Meta {
            version,
            tool,
            kernel,
            stats_source,
            events,
            mode,
            follows,
        }) = self.meta.take()
        {
            let uuid = self.track(|t, new| t.global(GLOBAL_TRACK, new))?;
            let p = Event::new(&mut self.interner, Type::TYPE_INSTANT, uuid)
                .name("meta")
                .arg("version", Arg::Uint(version.into()))
                .arg("tool", Arg::Str(&tool))
                .arg("kernel", Arg::Str(&kernel))
                .arg("stats_source", Arg::Str(&stats_source))
                .arg("events", Arg::Bool(events))
                .arg("mode", Arg::Str(&mode))
                .arg("follows", Arg::Str(&follows))
                .packet(ts_ns);
            self.out.push(p)?;
        }
        Ok(())
    }

    /// Begins the slice of region `id` of `pid` (ending one still open for the same
    /// identity: its address was made into a region again).
    fn begin_region(&mut self, ts: u64, pid: u32, id: u64, tid: Option<u32>) -> io::Result<()> {
        self.end_region(ts, pid, id)?;
        let (len, made_by) = self
            .regions
            .get(pid)
            .and_then(|p| p.by_region.get(&id))
            .map(|r| (r.len, r.made_by))
            .unwrap_or_default();
        let uuid = self.track(|t, new| t.region(pid, id, new))?;
        let mut ev = Event::new(&mut self.interner, Type::TYPE_SLICE_BEGIN, uuid)
            .name(&format!("{} region", made_by.name()))
            .arg("addr", Arg::Ptr(id))
            .arg("len", Arg::Uint(len))
            .arg("made_by", Arg::Str(made_by.name()));
        if let Some(tid) = tid {
            ev = ev.arg("tid", Arg::Uint(tid.into()));
        }
        let p = ev.packet(ts);
        self.open.insert((pid, id));
        self.out.push(p)
    }

    fn end_region(&mut self, ts: u64, pid: u32, id: u64) -> io::Result<()> {
        if !self.open.remove(&(pid, id)) {
            return Ok(());
        }
        let uuid = self.track(|t, new| t.region(pid, id, new))?;
        let p = Event::new(&mut self.interner, Type::TYPE_SLICE_END, uuid).packet(ts);
        self.out.push(p)
    }

    /// The identities of `pid`'s regions of which something is mapped.
    fn live_regions(&self, pid: u32) -> BTreeSet<u64> {
        self.regions
            .get(pid)
            .map(|p| p.region_ids.values().copied().collect())
            .unwrap_or_default()
    }

    /// Ends the slices of `pid`'s regions of which nothing is mapped any more.
    fn end_gone_regions(&mut self, ts: u64, pid: u32) -> io::Result<()> {
        let live = self.live_regions(pid);
        let gone: Vec<u64> = self
            .open
            .range((pid, 0)..=(pid, u64::MAX))
            .map(|&(_, id)| id)
            .filter(|id| !live.contains(id))
            .collect();
        for id in gone {
            self.end_region(ts, pid, id)?;
        }
        Ok(())
    }

    /// An instant on the process's track.
    fn process_instant(
        &mut self,
        ts: u64,
        pid: u32,
        name: &str,
        args: &[(&str, Arg<'_>)],
    ) -> io::Result<()> {
        let uuid = self.track(|t, new| t.process(pid, new))?;
        let mut ev = Event::new(&mut self.interner, Type::TYPE_INSTANT, uuid).name(name);
        for &(k, v) in args {
            ev = ev.arg(k, v);
        }
        let p = ev.packet(ts);
        self.out.push(p)
    }

    fn event(&mut self, ev: &TraceEvent) -> io::Result<()> {
        let (ts, pid) = (ev.ts_ns(), ev.pid());
        self.at(ts)?;
        self.regions.apply(ev);
        match *ev {
            TraceEvent::Fault {
                tid,
                kind,
                addr,
                region,
                page,
                ..
            } => {
                let uuid = self.track(|t, new| t.thread(pid, tid, new))?;
                let p = Event::new(&mut self.interner, Type::TYPE_INSTANT, uuid)
                    .name(kind.name())
                    .arg("addr", Arg::Ptr(addr))
                    .arg("region", Arg::Ptr(region))
                    .arg("page", Arg::Uint(page))
                    .arg("kind", Arg::Str(kind.name()))
                    .packet(ts);
                self.out.push(p)
            }
            TraceEvent::Region { tid, addr, .. } => self.begin_region(ts, pid, addr, Some(tid)),
            TraceEvent::Unmap {
                addr,
                len,
                region_bytes,
                ..
            } => {
                let args = [
                    ("addr", Arg::Ptr(addr)),
                    ("len", Arg::Uint(len)),
                    ("region_bytes", Arg::Uint(region_bytes)),
                ];
                self.process_instant(ts, pid, "munmap", &args)?;
                self.end_gone_regions(ts, pid)
            }
            TraceEvent::Remap {
                old_addr,
                old_len,
                new_addr,
                new_len,
                ..
            } => {
                let args = [
                    ("old_addr", Arg::Ptr(old_addr)),
                    ("old_len", Arg::Uint(old_len)),
                    ("new_addr", Arg::Ptr(new_addr)),
                    ("new_len", Arg::Uint(new_len)),
                ];
                self.process_instant(ts, pid, "mremap", &args)?;
                self.end_gone_regions(ts, pid)
            }
            TraceEvent::Fork { child, .. } => {
                self.process_instant(ts, pid, "fork", &[("child", Arg::Uint(child.into()))])?;
                // The child starts with copies of the parent's regions.
                for id in self.live_regions(child) {
                    self.begin_region(ts, child, id, None)?;
                }
                Ok(())
            }
            TraceEvent::Exec { .. } => {
                self.process_instant(ts, pid, "exec", &[])?;
                self.end_gone_regions(ts, pid)
            }
            TraceEvent::Exit { .. } => {
                self.process_instant(ts, pid, "exit", &[])?;
                self.end_gone_regions(ts, pid)
            }
        }
    }

    /// A `stats` record: the process's name and a value on each of its counter tracks.
    fn stats(&mut self, ts: u64, pid: u32, comm: &str, values: Vec<u64>) -> io::Result<()> {
        self.at(ts)?;
        self.track(|t, new| {
            t.name_process(pid, comm, new);
            0
        })?;
        for (i, v) in values.into_iter().enumerate() {
            let uuid = self.track(|t, new| t.counter(pid, i, new))?;
            let value = i64::try_from(v).unwrap_or(i64::MAX);
            let p = Event::new(&mut self.interner, Type::TYPE_COUNTER, uuid)
                .counter(value)
                .packet(ts);
            self.out.push(p)?;
        }
        Ok(())
    }

    /// A `region_summary` record: an instant on the region's track, at the last time seen.
    fn region_summary(&mut self, r: &Record) -> io::Result<()> {
        let Record::RegionSummary {
            pid,
            region,
            made_by,
            len,
            read_zero,
            write_zero,
            cow_zero,
            cow,
            other,
        } = *r
        else {
            return Ok(());
        };
        let ts = self.last_ts;
        self.at(ts)?;
        let uuid = self.track(|t, new| t.region(pid, region, new))?;
        let counts: [u64; FAULT_KINDS] = [read_zero, write_zero, cow_zero, cow, other];
        let mut ev = Event::new(&mut self.interner, Type::TYPE_INSTANT, uuid)
            .name("region summary")
            .arg("len", Arg::Uint(len))
            .arg("made_by", Arg::Str(made_by.name()));
        for (k, n) in FaultKind::ALL.iter().zip(counts) {
            ev = ev.arg(k.name(), Arg::Uint(n));
        }
        let p = ev.packet(ts);
        self.out.push(p)
    }

    /// A `stack` record: kept for the dump (its process named, as a summary names it).
    fn stack(&mut self, r: &Record) -> io::Result<()> {
        if let Record::Stack { pid, ref comm, .. } = *r {
            self.track(|t, new| {
                t.name_process(pid, comm, new);
                0
            })?;
        }
        self.stacks.add(r);
        Ok(())
    }

    /// The stacks given since the last dump, as a dump at the last time seen.
    fn dump_stacks(&mut self) -> io::Result<()> {
        let ts = self.last_ts;
        self.at(ts)?;
        for p in self.stacks.dump(ts).into_iter().flatten() {
            self.out.push(p)?;
        }
        Ok(())
    }

    /// The `drops` record: an instant on the `tamalloc` track, at the last time seen, after
    /// the stacks' dump.
    fn drops(&mut self, fields: [(&str, u64); 9]) -> io::Result<()> {
        self.dump_stacks()?;
        let ts = self.last_ts;
        let uuid = self.track(|t, new| t.global(GLOBAL_TRACK, new))?;
        let mut ev = Event::new(&mut self.interner, Type::TYPE_INSTANT, uuid).name("drops");
        for (k, v) in fields {
            ev = ev.arg(k, Arg::Uint(v));
        }
        let p = ev.packet(ts);
        self.out.push(p)
    }
}

/// A `stats` record's counter values, in the order of the counter tracks: memory (bytes),
/// then the pages first touched by kind.
fn counter_values(r: &Record) -> Vec<u64> {
    let Record::Stats {
        vm_rss_kib,
        vm_size_kib,
        tamalloc_reserved_kib,
        tamalloc_resident_kib,
        reserved_bytes,
        ..
    } = *r
    else {
        return Vec::new();
    };
    // The tracer's own count, or the kernel's when it knows more (syscall 555).
    let reserved = reserved_bytes.max(tamalloc_reserved_kib.saturating_mul(1024));
    let memory = [
        vm_rss_kib.saturating_mul(1024),
        vm_size_kib.saturating_mul(1024),
        reserved,
        tamalloc_resident_kib.saturating_mul(1024),
    ];
    memory
        .into_iter()
        .chain(r.faults().unwrap_or_default())
        .collect()
}

impl<W: Write> Sink for Perfetto<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        match *r {
            Record::Meta { .. } => {
                self.start()?;
                self.meta = Some(r.clone());
                Ok(())
            }
            Record::Event(ev) => self.event(&ev),
            Record::Stats {
                ts_ns,
                pid,
                ref comm,
                ..
            } => self.stats(ts_ns, pid, comm, counter_values(r)),
            Record::Summary { pid, ref comm, .. } => self
                .track(|t, new| {
                    t.name_process(pid, comm, new);
                    0
                })
                .map(drop),
            Record::RegionSummary { .. } => self.region_summary(r),
            Record::Drops {
                count,
                fault_events,
                control_events,
                map_full,
                traced_full,
                region_cut,
                region_unresolved,
                stacks_lost,
                stacks_full,
            } => self.drops([
                ("count", count),
                ("fault_events", fault_events),
                ("control_events", control_events),
                ("map_full", map_full),
                ("traced_full", traced_full),
                ("region_cut", region_cut),
                ("region_unresolved", region_unresolved),
                ("stacks_lost", stacks_lost),
                ("stacks_full", stacks_full),
            ]),
            Record::Stack { .. } => self.stack(r),
            // System-wide figures are not drawn (as in the Chrome JSON export).
            Record::Global { .. } => self.start(),
        }
    }

    fn thread_name(&mut self, pid: u32, tid: u32, name: &str) {
        self.tracks.set_thread_name(pid, tid, name);
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        // A trace with no timed record still says what made it; stacks not followed by a
        // `drops` record are dumped here.
        self.dump_stacks()?;
        self.out.flush()
    }
}

impl<W: Write> Drop for Perfetto<W> {
    /// A session that ends on an error still leaves a file that opens.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
