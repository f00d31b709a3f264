//! Per-process state built from decoded events and counter snapshots.
//!
//! The eBPF side counts (exact, never dropped); the events add what counters cannot say:
//! which regions exist, who forked whom, when a process ended. A process's final counters
//! are taken from the map when its `Exit` event arrives, so the summary stays exact even for
//! processes that end long before the trace does.

use std::collections::BTreeMap;

use tamalloc_common::{
    maps::PidCounters,
    trace::{FAULT_KINDS, FaultKind},
};

use super::decode::{MadeBy, TraceEvent};

/// One region's first touches, from the streamed fault events (faults name their region by
/// its identity, its first address when it was made).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionFaults {
    /// Its length, as last made, grown or moved.
    pub len: u64,
    pub made_by: MadeBy,
    pub faults: [u64; FAULT_KINDS],
}

impl RegionFaults {
    /// Pages first touched: every kind but `cow` (a copy of a page touched before) and
    /// `other`; a page read and then written counts once.
    pub fn pages_touched(&self) -> u64 {
        self.faults[FaultKind::ReadZero as usize] + self.faults[FaultKind::WriteZero as usize]
    }
}

/// What the tracer knows about one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcState {
    pub comm: String,
    /// Counters as last read (summed over CPUs), plus `base`.
    pub counters: PidCounters,
    /// Counters taken from the probe earlier in the process's life (an exec by a thread
    /// other than the leader ends the old leader first): added to every later reading.
    pub base: PidCounters,
    /// Live regions seen through events: address -> length (after unmaps and remaps).
    pub regions: BTreeMap<u64, u64>,
    /// Every region the process had, by identity, with its streamed faults (empty when
    /// faults were only counted). Kept after unmap, exec and exit, for the summary.
    pub by_region: BTreeMap<u64, RegionFaults>,
    /// The process has exited; `counters` are final.
    pub exited: bool,
    pub parent: Option<u32>,
    /// VmRSS at the previous refresh, for the change column.
    pub last_rss_kib: Option<u64>,
    /// The probe has counters for it: it has (or had) regions. Others are only known
    /// from fork/exec events and are not shown.
    pub counted: bool,
}

impl ProcState {
    pub fn faults(&self, kind: FaultKind) -> u64 {
        self.counters.faults[kind as usize]
    }

    /// Pages made resident by faults we saw: every kind but `read_zero` and `other`.
    pub fn pages_made_resident(&self) -> u64 {
        self.faults(FaultKind::WriteZero) + self.faults(FaultKind::CowZero)
    }

    /// Bytes of live region pages (as the eBPF counters say).
    pub fn reserved_bytes(&self) -> u64 {
        self.counters.reserved_bytes
    }
}

/// All processes, keyed by pid.
#[derive(Debug, Default)]
pub struct Aggregator {
    procs: BTreeMap<u32, ProcState>,
    /// Fault events seen per kind (only with streaming), to cross-check the counters.
    pub streamed: [u64; FAULT_KINDS],
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// The processes the probe counted (had regions), by pid.
    pub fn procs(&self) -> impl Iterator<Item = (&u32, &ProcState)> {
        self.procs.iter().filter(|(_, p)| p.counted)
    }

    pub fn get(&self, pid: u32) -> Option<&ProcState> {
        self.procs.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> &mut ProcState {
        self.procs.entry(pid).or_default()
    }

    pub fn live_pids(&self) -> Vec<u32> {
        self.procs()
            .filter(|(_, p)| !p.exited)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Applies one event. Counter values are not derived from events (they may be dropped);
    /// they come from [`Aggregator::set_counters`].
    pub fn apply(&mut self, ev: &TraceEvent) {
        match *ev {
            TraceEvent::Fault {
                pid, kind, region, ..
            } => {
                self.streamed[kind as usize] += 1;
                self.get_mut(pid)
                    .by_region
                    .entry(region)
                    .or_default()
                    .faults[kind as usize] += 1;
            }
            TraceEvent::Region {
                pid,
                addr,
                len,
                made_by,
                ..
            } => {
                let p = self.get_mut(pid);
                p.regions.insert(addr, len);
                let r = p.by_region.entry(addr).or_default();
                (r.len, r.made_by) = (len, made_by);
            }
            TraceEvent::Unmap { pid, addr, len, .. } => {
                trim(
                    &mut self.get_mut(pid).regions,
                    addr,
                    addr.saturating_add(len),
                );
            }
            TraceEvent::Remap {
                pid,
                old_addr,
                old_len,
                new_addr,
                new_len,
                ..
            } => {
                let p = self.get_mut(pid);
                trim(&mut p.regions, old_addr, old_addr.saturating_add(old_len));
                p.regions.insert(new_addr, new_len);
                // A region keeps its identity when it grows, shrinks or moves.
                if let Some(r) = p.by_region.get_mut(&old_addr) {
                    r.len = new_len;
                }
            }
            TraceEvent::Fork { pid, child, .. } => {
                let parent = self.get_mut(pid);
                let (comm, regions) = (parent.comm.clone(), parent.regions.clone());
                // The child's copies, with faults of their own from here on.
                let by_region: BTreeMap<u64, RegionFaults> = parent
                    .by_region
                    .iter()
                    .map(|(&id, r)| {
                        let copy = RegionFaults {
                            faults: [0; FAULT_KINDS],
                            ..r.clone()
                        };
                        (id, copy)
                    })
                    .collect();
                let c = self.get_mut(child);
                c.parent = Some(pid);
                c.regions = regions;
                c.by_region = by_region;
                if c.comm.is_empty() {
                    c.comm = comm;
                }
            }
            TraceEvent::Exec { pid, .. } => {
                let p = self.get_mut(pid);
                p.regions.clear();
                // A non-leader thread's exec ends the old leader (an exit event) first.
                p.exited = false;
                // The command name changes with exec; the next refresh reads it again.
                p.comm.clear();
            }
            TraceEvent::Exit { pid, .. } => {
                let p = self.get_mut(pid);
                p.exited = true;
                p.regions.clear();
            }
        }
    }

    /// Stores a counter snapshot for `pid` (ignored for processes whose counters are final).
    pub fn set_counters(&mut self, pid: u32, counters: PidCounters) {
        let p = self.get_mut(pid);
        p.counted = true;
        if !p.exited {
            p.counters = add(&p.base, &counters);
        }
    }

    /// Stores the final counters of an exited process.
    pub fn finish(&mut self, pid: u32, counters: PidCounters) {
        let p = self.get_mut(pid);
        p.base = add(&p.base, &counters);
        p.counters = p.base;
        p.counted = true;
        p.exited = true;
    }
}

fn add(a: &PidCounters, b: &PidCounters) -> PidCounters {
    let mut out = *a;
    for (o, x) in out.faults.iter_mut().zip(b.faults) {
        *o += x;
    }
    out.regions += b.regions;
    out.huge_faults += b.huge_faults;
    out.reserved_bytes = out.reserved_bytes.wrapping_add(b.reserved_bytes);
    out
}

/// Removes `[start, end)` from a set of disjoint ranges, splitting where needed.
fn trim(regions: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let hit: Vec<(u64, u64)> = regions
        .range(..end)
        .filter(|&(&a, &l)| a.saturating_add(l) > start)
        .map(|(&a, &l)| (a, l))
        .collect();
    for (a, l) in hit {
        regions.remove(&a);
        let e = a.saturating_add(l);
        if a < start {
            regions.insert(a, start - a);
        }
        if e > end {
            regions.insert(end, e - end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmap_splits_and_trims_regions() {
        let mut agg = Aggregator::new();
        agg.apply(&TraceEvent::Region {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            addr: 0x10000,
            len: 0x10000,
            fallback: true,
            made_by: MadeBy::Fallback,
        });
        agg.apply(&TraceEvent::Unmap {
            ts_ns: 1,
            pid: 1,
            addr: 0x14000,
            len: 0x2000,
            region_bytes: 0x2000,
        });
        let r: Vec<_> = agg
            .get(1)
            .map(|p| p.regions.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        assert_eq!(r, vec![(0x10000, 0x4000), (0x16000, 0xa000)]);
    }

    #[test]
    fn fork_copies_regions_and_exit_freezes_counters() {
        let mut agg = Aggregator::new();
        agg.get_mut(1).comm = "parent".into();
        agg.apply(&TraceEvent::Region {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            addr: 0x1000,
            len: 0x1000,
            fallback: false,
            made_by: MadeBy::Tamalloc,
        });
        agg.apply(&TraceEvent::Fork {
            ts_ns: 1,
            pid: 1,
            child: 2,
        });
        assert_eq!(agg.get(2).map(|p| p.regions.len()), Some(1));
        assert_eq!(agg.get(2).and_then(|p| p.parent), Some(1));
        let mut c = PidCounters::default();
        c.faults[FaultKind::WriteZero as usize] = 3;
        agg.finish(2, c);
        agg.set_counters(2, PidCounters::default());
        assert_eq!(agg.get(2).map(|p| p.faults(FaultKind::WriteZero)), Some(3));
        // Only processes the probe counted are listed.
        assert_eq!(agg.live_pids(), Vec::<u32>::new());
        agg.set_counters(1, PidCounters::default());
        assert_eq!(agg.live_pids(), vec![1]);
    }

    #[test]
    fn exec_after_exit_revives_and_keeps_earlier_counts() {
        let mut agg = Aggregator::new();
        let mut c = PidCounters::default();
        c.faults[FaultKind::ReadZero as usize] = 5;
        agg.finish(7, c);
        agg.apply(&TraceEvent::Exec { ts_ns: 1, pid: 7 });
        c.faults[FaultKind::ReadZero as usize] = 2;
        agg.set_counters(7, c);
        assert_eq!(agg.get(7).map(|p| p.faults(FaultKind::ReadZero)), Some(7));
        agg.finish(7, c);
        assert_eq!(agg.get(7).map(|p| p.faults(FaultKind::ReadZero)), Some(7));
        assert_eq!(agg.get(7).map(|p| p.exited), Some(true));
    }
}
