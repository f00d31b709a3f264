//! Reading a trace (JSON lines or a recording) into what the report draws: per process, the reserved bytes
//! over time (replayed with the tracer's own [`Aggregator`]), the `stats` samples and the
//! streamed faults, cumulative by kind.

use std::{collections::BTreeMap, path::Path};

use tamalloc_common::trace::FAULT_KINDS;

use super::ReportError;
use crate::tracer::{aggregate::Aggregator, decode::TraceEvent, record::Record, recording::Item};

/// Fault points closer together than this are merged (the curve keeps its shape, the
/// memory stays bounded by the trace's duration rather than its number of faults).
const FAULT_RESOLUTION_NS: u64 = 10_000_000;

/// One `stats` sample.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sample {
    pub(super) ts_ns: u64,
    pub(super) vm_rss_kib: u64,
    pub(super) tamalloc_resident_kib: u64,
    /// The tracer's counters so far, in [`FaultKind::ALL`](tamalloc_common::trace::FaultKind::ALL) order.
    pub(super) faults: [u64; FAULT_KINDS],
}

/// What the report knows of one process.
#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub comm: String,
    /// Regions created in this process.
    pub regions: u64,
    /// The largest reserved size, in bytes.
    pub peak_reserved: u64,
    /// Reserved bytes over time (a step function).
    pub(super) reserved: Vec<(u64, u64)>,
    pub(super) samples: Vec<Sample>,
    /// Cumulative streamed faults by kind: (ts_ns, count) points.
    pub(super) faults: [Vec<(u64, u64)>; FAULT_KINDS],
    /// Final counts (summary record, else the last sample or the streamed faults).
    pub totals: [u64; FAULT_KINDS],
}

impl Proc {
    fn interesting(&self) -> bool {
        self.regions > 0
            || self.peak_reserved > 0
            || self.totals.iter().any(|&n| n > 0)
            || self.faults.iter().any(|f| !f.is_empty())
    }

    /// Whether the kernel reported tamalloc resident sizes (syscall 555), else they are
    /// derived from the first-touch writes.
    pub(super) fn kernel_resident(&self) -> bool {
        self.samples.iter().any(|s| s.tamalloc_resident_kib > 0)
    }

    pub(super) fn streamed(&self) -> bool {
        self.faults.iter().any(|f| !f.is_empty())
    }
}

/// A trace, reduced to what the report draws.
#[derive(Debug, Default)]
pub struct Trace {
    /// The first timestamp in the trace: time 0 of the report.
    pub t0_ns: u64,
    pub procs: BTreeMap<u32, Proc>,
    pub stats_source: String,
    /// A recording cut short (the tracer was killed): read up to its last complete frame.
    pub truncated: bool,
}

impl Trace {
    /// Reads a trace: JSON lines or a recording. Records of types this version does not
    /// know are skipped.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let mut t = Trace::default();
        let mut agg = Aggregator::new();
        let mut first: Option<u64> = None;
        let info = super::read::read(path, |item| {
            let r = match item {
                Item::Event { ev, .. } => Record::Event(ev),
                Item::Record(r) => r,
                Item::ThreadName { .. } => return Ok(()),
            };
            if let Some(ts) = r.ts_ns() {
                first = Some(first.map_or(ts, |f| f.min(ts)));
            }
            t.add(&r, &mut agg);
            Ok(())
        })?;
        t.truncated = info.truncated;
        t.t0_ns = first.unwrap_or(0);
        for p in t.procs.values_mut() {
            if p.totals.iter().all(|&n| n == 0) {
                if let Some(s) = p.samples.last() {
                    p.totals = s.faults;
                }
                for (k, f) in p.faults.iter().enumerate() {
                    p.totals[k] = p.totals[k].max(f.last().map_or(0, |l| l.1));
                }
            }
        }
        t.procs.retain(|_, p| p.interesting());
        if t.procs.is_empty() {
            return Err(ReportError::Empty(path.to_owned()));
        }
        Ok(t)
    }

    fn add(&mut self, r: &Record, agg: &mut Aggregator) {
        if let Some(ev) = r.to_event() {
            agg.apply(&ev);
        }
        match r {
            Record::Meta { stats_source, .. } => self.stats_source = stats_source.clone(),
            Record::Event(TraceEvent::Region { ts_ns, pid, .. }) => {
                self.procs.entry(*pid).or_default().regions += 1;
                self.reserved_now(*ts_ns, *pid, agg);
            }
            Record::Event(TraceEvent::Unmap { ts_ns, pid, .. })
            | Record::Event(TraceEvent::Remap { ts_ns, pid, .. })
            | Record::Event(TraceEvent::Exec { ts_ns, pid })
            | Record::Event(TraceEvent::Exit { ts_ns, pid }) => {
                if self.procs.contains_key(pid) {
                    self.reserved_now(*ts_ns, *pid, agg);
                }
            }
            Record::Event(TraceEvent::Fork { ts_ns, pid, child }) => {
                if self.procs.contains_key(pid) {
                    let comm = self.procs[pid].comm.clone();
                    self.procs.entry(*child).or_default().comm = comm;
                    self.reserved_now(*ts_ns, *child, agg);
                }
            }
            Record::Event(TraceEvent::Fault {
                ts_ns, pid, kind, ..
            }) => {
                let points = &mut self.procs.entry(*pid).or_default().faults[*kind as usize];
                let n = points.last().map_or(0, |p| p.1) + 1;
                match points.last_mut() {
                    Some(last) if ts_ns.saturating_sub(last.0) < FAULT_RESOLUTION_NS => last.1 = n,
                    _ => points.push((*ts_ns, n)),
                }
            }
            Record::Stats {
                ts_ns,
                pid,
                comm,
                vm_rss_kib,
                tamalloc_resident_kib,
                ..
            } => {
                let p = self.named(*pid, comm);
                p.samples.push(Sample {
                    ts_ns: *ts_ns,
                    vm_rss_kib: *vm_rss_kib,
                    tamalloc_resident_kib: *tamalloc_resident_kib,
                    faults: r.faults().unwrap_or_default(),
                });
            }
            Record::Summary { pid, comm, .. } => {
                self.named(*pid, comm).totals = r.faults().unwrap_or_default()
            }
            Record::Global { .. }
            | Record::Drops { .. }
            | Record::RegionSummary { .. }
            | Record::Stack { .. } => {}
        }
    }

    /// Process `pid`, named `comm` unless that is empty.
    fn named(&mut self, pid: u32, comm: &str) -> &mut Proc {
        let p = self.procs.entry(pid).or_default();
        if !comm.is_empty() {
            comm.clone_into(&mut p.comm);
        }
        p
    }

    fn reserved_now(&mut self, ts_ns: u64, pid: u32, agg: &Aggregator) {
        let bytes = agg.get(pid).map_or(0, |s| s.regions.values().sum::<u64>());
        let p = self.procs.entry(pid).or_default();
        p.peak_reserved = p.peak_reserved.max(bytes);
        if p.reserved.last().is_none_or(|l| l.1 != bytes) {
            p.reserved.push((ts_ns, bytes));
        }
    }

    /// The pids the report shows: `pid` alone, or all.
    pub fn select(&self, pid: Option<u32>) -> Result<Vec<u32>, ReportError> {
        match pid {
            None => Ok(self.procs.keys().copied().collect()),
            Some(p) if self.procs.contains_key(&p) => Ok(vec![p]),
            Some(p) => Err(ReportError::NoSuchPid {
                pid: p,
                known: self
                    .procs
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
