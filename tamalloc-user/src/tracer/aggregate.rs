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
    /// The identity of each live range in `regions` (its region's first address when it
    /// was made), by the range's start.
    pub region_ids: BTreeMap<u64, u64>,
    /// The process's regions, by identity, with their streamed faults (empty when faults
    /// were only counted). Kept after unmap and exit, for the summary.
    pub by_region: BTreeMap<u64, RegionFaults>,
    /// Regions of earlier lives: an identity made again (an address reused by a new
    /// mapping), or an image before exec.
    pub past_regions: Vec<(u64, RegionFaults)>,
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

    /// Every region the process had, earlier lives first, with its streamed faults.
    pub fn all_regions(&self) -> impl Iterator<Item = (u64, &RegionFaults)> {
        self.past_regions
            .iter()
            .map(|(id, r)| (*id, r))
            .chain(self.by_region.iter().map(|(id, r)| (*id, r)))
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
                p.region_ids.insert(addr, addr);
                let new = RegionFaults {
                    len,
                    made_by,
                    faults: [0; FAULT_KINDS],
                };
                if let Some(old) = p.by_region.insert(addr, new) {
                    p.past_regions.push((addr, old));
                }
            }
            TraceEvent::Unmap { pid, addr, len, .. } => {
                let p = self.get_mut(pid);
                trim(
                    &mut p.regions,
                    &mut p.region_ids,
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
                // A region keeps its identity when it grows, shrinks or moves.
                let id = p
                    .region_ids
                    .range(..=old_addr)
                    .next_back()
                    .filter(|&(start, _)| {
                        p.regions
                            .get(start)
                            .is_some_and(|&l| start.saturating_add(l) > old_addr)
                    })
                    .map_or(old_addr, |(_, &id)| id);
                trim(
                    &mut p.regions,
                    &mut p.region_ids,
                    old_addr,
                    old_addr.saturating_add(old_len),
                );
                p.regions.insert(new_addr, new_len);
                p.region_ids.insert(new_addr, id);
                if let Some(r) = p.by_region.get_mut(&id) {
                    r.len = new_len;
                }
            }
            TraceEvent::Fork { pid, child, .. } => {
                let parent = self.get_mut(pid);
                let (comm, regions, ids) = (
                    parent.comm.clone(),
                    parent.regions.clone(),
                    parent.region_ids.clone(),
                );
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
                c.region_ids = ids;
                c.by_region = by_region;
                if c.comm.is_empty() {
                    c.comm = comm;
                }
            }
            TraceEvent::Exec { pid, .. } => {
                let p = self.get_mut(pid);
                p.regions.clear();
                p.region_ids.clear();
                let old = std::mem::take(&mut p.by_region);
                p.past_regions.extend(old);
                // A non-leader thread's exec ends the old leader (an exit event) first.
                p.exited = false;
                // The command name changes with exec; the next refresh reads it again.
                p.comm.clear();
            }
            TraceEvent::Exit { pid, .. } => {
                let p = self.get_mut(pid);
                p.exited = true;
                p.regions.clear();
                p.region_ids.clear();
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

/// Removes `[start, end)` from a set of disjoint ranges, splitting where needed; a piece
/// left keeps its range's identity in `ids`.
fn trim(regions: &mut BTreeMap<u64, u64>, ids: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let hit: Vec<(u64, u64)> = regions
        .range(..end)
        .filter(|&(&a, &l)| a.saturating_add(l) > start)
        .map(|(&a, &l)| (a, l))
        .collect();
    for (a, l) in hit {
        regions.remove(&a);
        let id = ids.remove(&a).unwrap_or(a);
        let e = a.saturating_add(l);
        if a < start {
            regions.insert(a, start - a);
            ids.insert(a, id);
        }
        if e > end {
            regions.insert(end, e - end);
            ids.insert(end, id);
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
    fn regions_keep_their_identity_across_moves_and_a_reused_address_starts_anew() {
        let fault = |region, kind| TraceEvent::Fault {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            kind,
            addr: region,
            region,
            page: 0,
            error_code: 0,
        };
        let region = |addr| TraceEvent::Region {
            ts_ns: 0,
            pid: 1,
            tid: 1,
            addr,
            len: 0x2000,
            fallback: false,
            made_by: MadeBy::Mmap,
        };
        let mut agg = Aggregator::new();
        agg.apply(&region(0x10000));
        agg.apply(&fault(0x10000, FaultKind::WriteZero));
        // Moved twice (mremap): the second move names its current address, not the id.
        for (old, new) in [(0x10000, 0x40000), (0x40000, 0x80000)] {
            agg.apply(&TraceEvent::Remap {
                ts_ns: 0,
                pid: 1,
                old_addr: old,
                old_len: 0x2000,
                new_addr: new,
                new_len: 0x4000,
            });
        }
        let p = agg.get(1).cloned().unwrap_or_default();
        assert_eq!(p.by_region[&0x10000].len, 0x4000);
        assert_eq!(p.region_ids.get(&0x80000), Some(&0x10000));
        // Unmapped, and the address made into a region again: a new life.
        agg.apply(&TraceEvent::Unmap {
            ts_ns: 0,
            pid: 1,
            addr: 0x80000,
            len: 0x4000,
            region_bytes: 0x4000,
        });
        agg.apply(&region(0x10000));
        agg.apply(&fault(0x10000, FaultKind::ReadZero));
        let p = agg.get(1).cloned().unwrap_or_default();
        let lives: Vec<[u64; FAULT_KINDS]> = p.all_regions().map(|(_, r)| r.faults).collect();
        assert_eq!(lives, vec![[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]);
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
