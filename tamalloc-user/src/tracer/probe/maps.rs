//! Typed access to the programs' maps: the settings written before attaching, the processes
//! to follow, per-process counters and their slots, drops, and the event ring.

use std::collections::{HashMap, HashSet};

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues, Queue, RingBuf},
};
use tamalloc_common::maps::{
    self as name, ANON_NAME_MAX, Chunk, ChunkKey, Config, DROP_CONTROL_EVENTS, DROP_FAULT_EVENTS,
    DROP_MAP_FULL, DROP_REGION_CUT, DROP_REGION_UNRESOLVED, DROP_STACKS_FULL, DROP_STACKS_LOST,
    DROP_TRACED_FULL, Heap, Marker, MarkerKey, PidCounters,
};

use super::{Probe, refused};
use crate::tracer::TraceError;

/// Ended instances [`Probe::collect_dead`] takes from `DEAD` per call.
const DEAD_BATCH: usize = 4096;

/// Events lost on the way to userspace, or region state the maps had no room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    pub fault_events: u64,
    pub control_events: u64,
    pub map_full: u64,
    /// Processes to follow that `TRACED` had no room for.
    pub traced_full: u64,
    /// Regions cut short for want of room in `CHUNKS`.
    pub region_cut: u64,
    /// Fault events of a forked child that name no region: its parent replaced the
    /// region's marker after the fork.
    pub region_unresolved: u64,
    /// `--stacks`: first touches whose stack could not be taken.
    pub stacks_lost: u64,
    /// `--stacks`: first touches the stack aggregation map had no room for.
    pub stacks_full: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.fault_events
            + self.control_events
            + self.map_full
            + self.traced_full
            + self.region_cut
            + self.region_unresolved
            + self.stacks_lost
            + self.stacks_full
    }
}

pub(super) fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map, TraceError> {
    ebpf.map_mut(name)
        .ok_or_else(|| TraceError::Internal(format!("map {name} missing")))
}

pub(super) fn map_ref<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Map, TraceError> {
    ebpf.map(name)
        .ok_or_else(|| TraceError::Internal(format!("map {name} missing")))
}

/// Writes the settings the programs read (`CONFIG[0]`).
pub(super) fn write_config(ebpf: &mut Ebpf, cfg: Config) -> Result<(), TraceError> {
    let mut config: Array<_, Config> =
        Array::try_from(map_mut(ebpf, name::CONFIG)?).map_err(refused)?;
    config.set(0, cfg, 0).map_err(refused)
}

/// Writes NAME for `--regions name:NAME` (`REGION_NAME[0]`, NUL-padded; its length was
/// checked when the option was parsed).
pub(super) fn write_region_name(ebpf: &mut Ebpf, n: &str) -> Result<(), TraceError> {
    let mut name_map: Array<_, [u8; ANON_NAME_MAX]> =
        Array::try_from(map_mut(ebpf, name::REGION_NAME)?).map_err(refused)?;
    let mut buf = [0u8; ANON_NAME_MAX];
    let len = n.len().min(ANON_NAME_MAX - 1);
    buf[..len].copy_from_slice(&n.as_bytes()[..len]);
    name_map.set(0, buf, 0).map_err(refused)
}

/// Queues every counter slot as free, before the programs run.
pub(super) fn free_all_slots(ebpf: &mut Ebpf, slots: u32) -> Result<(), TraceError> {
    let mut free: Queue<_, u32> =
        Queue::try_from(map_mut(ebpf, name::FREE_SLOTS)?).map_err(refused)?;
    for slot in 0..slots {
        free.push(slot, 0).map_err(refused)?;
    }
    Ok(())
}

fn sum<'a>(values: impl Iterator<Item = &'a PidCounters>) -> PidCounters {
    let mut total = PidCounters::default();
    for v in values {
        for (t, f) in total.faults.iter_mut().zip(v.faults) {
            *t += f;
        }
        total.regions += v.regions;
        total.huge_faults += v.huge_faults;
        total.reserved_bytes = total.reserved_bytes.wrapping_add(v.reserved_bytes);
    }
    total
}

impl Probe {
    /// Learn the regions of `pid` and of the processes it forks from now on.
    pub fn follow(&mut self, pid: u32) -> Result<(), TraceError> {
        self.set_traced(pid, name::TRACED_NOW)
    }

    /// Follows `pid` (and what it forks) from its next exec on: the helper that execs the
    /// command of `trace -- CMD`, whose own pages are not the command's.
    pub fn follow_from_exec(&mut self, pid: u32) -> Result<(), TraceError> {
        self.set_traced(pid, name::TRACED_FROM_EXEC)
    }

    fn set_traced(&mut self, pid: u32, how: u8) -> Result<(), TraceError> {
        let mut traced: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, name::TRACED)?).map_err(refused)?;
        traced.insert(pid, how, 0).map_err(refused)
    }

    /// Drops what the programs keep about `pid`, once it is gone for good (its leader left
    /// with exit(2), so the programs could not tell when the last thread ended): its
    /// instance is closed and its entries deleted by the next [`Probe::collect_dead`]. Its
    /// link to an origin is dropped by the programs when its counter slot is next claimed.
    pub fn forget(&mut self, pid: u32) -> Result<(), TraceError> {
        {
            let mut heaps: BpfHashMap<_, u32, Heap> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, name::HEAPS)?).map_err(refused)?;
            // Absent unless `--regions anon` saw its heap.
            let _ = heaps.remove(&pid);
        }
        {
            let mut instances: Array<_, u32> =
                Array::try_from(map_mut(&mut self.ebpf, name::INSTANCE)?).map_err(refused)?;
            let inst = instances.get(&pid, 0).unwrap_or(0);
            if inst != 0 {
                instances.set(pid, 0, 0).map_err(refused)?;
                self.dead_chunks.insert(inst);
                self.dead_markers.insert(inst);
            }
        }
        let mut traced: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, name::TRACED)?).map_err(refused)?;
        let _ = traced.remove(&pid);
        Ok(())
    }

    /// Deletes what the programs kept of instances that ended (`DEAD`: exits and execs,
    /// which the programs handle in O(1)): their chunks at once, their markers once no live
    /// process has the instance as its origin (`ORIGIN_REFS`, see `tamalloc_common::maps`).
    /// One pass over each map, and none when nothing ended; at most [`DEAD_BATCH`] ends per
    /// call (the rest wait for the next refresh).
    pub fn collect_dead(&mut self) -> Result<(), TraceError> {
        let mut ended = Vec::new();
        {
            let mut dead: Queue<_, u64> =
                Queue::try_from(map_mut(&mut self.ebpf, name::DEAD)?).map_err(refused)?;
            while ended.len() < DEAD_BATCH
                && let Ok(entry) = dead.pop(0)
            {
                ended.push(((entry >> 32) as u32, entry as u32));
            }
        }
        if !ended.is_empty() {
            // A thread that was still in a syscall when its process ended may have opened
            // the instance's gate again; nothing of it may count.
            let mut instances: Array<_, u32> =
                Array::try_from(map_mut(&mut self.ebpf, name::INSTANCE)?).map_err(refused)?;
            for &(pid, inst) in &ended {
                if instances.get(&pid, 0).is_ok_and(|i| i == inst) {
                    let _ = instances.set(pid, 0, 0);
                }
                self.dead_chunks.insert(inst);
                self.dead_markers.insert(inst);
            }
        }
        if !self.dead_chunks.is_empty() {
            let dead = std::mem::take(&mut self.dead_chunks);
            self.delete_instances::<ChunkKey, Chunk>(name::CHUNKS, &dead, |k| k.inst())?;
        }
        if self.dead_markers.is_empty() {
            return Ok(());
        }
        // An ended instance gains no child: children link to a live parent, or to the
        // origin their parent holds a reference to.
        let ready: HashSet<u32> = {
            let refs: BpfHashMap<_, u32, u64> =
                BpfHashMap::try_from(map_ref(&self.ebpf, name::ORIGIN_REFS)?).map_err(refused)?;
            self.dead_markers
                .iter()
                .copied()
                .filter(|i| match refs.get(i, 0) {
                    Ok(n) => n == 0,
                    Err(aya::maps::MapError::KeyNotFound) => true,
                    Err(_) => false,
                })
                .collect()
        };
        if ready.is_empty() {
            return Ok(());
        }
        // The markers first: while the `ORIGIN_REFS` entry stays, no new instance of the
        // slot takes this generation (the programs skip it).
        self.delete_instances::<MarkerKey, Marker>(name::MARKERS, &ready, |k| k.inst)?;
        let mut refs: BpfHashMap<_, u32, u64> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, name::ORIGIN_REFS)?).map_err(refused)?;
        for i in &ready {
            let _ = refs.remove(i);
            self.dead_markers.remove(i);
        }
        Ok(())
    }

    /// Deletes the entries of hash map `map` (`K -> V`) whose key names (`inst_of`) one of
    /// `insts`.
    fn delete_instances<K: Pod, V: Pod>(
        &mut self,
        map: &str,
        insts: &HashSet<u32>,
        inst_of: fn(&K) -> u32,
    ) -> Result<(), TraceError> {
        let mut entries: BpfHashMap<_, K, V> =
            BpfHashMap::try_from(map_mut(&mut self.ebpf, map)?).map_err(refused)?;
        let keys: Vec<K> = entries
            .keys()
            .filter_map(Result::ok)
            .filter(|k| insts.contains(&inst_of(k)))
            .collect();
        for k in keys {
            let _ = entries.remove(&k);
        }
        Ok(())
    }

    /// Every process's counters, summed over CPUs.
    pub fn counters(&self) -> Result<HashMap<u32, PidCounters>, TraceError> {
        let slots: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(map_ref(&self.ebpf, name::SLOTS)?).map_err(refused)?;
        let counters: PerCpuArray<_, PidCounters> =
            PerCpuArray::try_from(map_ref(&self.ebpf, name::COUNTERS)?).map_err(refused)?;
        let mut out = HashMap::new();
        for item in slots.iter() {
            let (pid, slot) = item.map_err(refused)?;
            out.insert(pid, sum(counters.get(&slot, 0).map_err(refused)?.iter()));
        }
        Ok(out)
    }

    /// Processes with a counter slot.
    pub fn slot_pids(&self) -> Result<Vec<u32>, TraceError> {
        let slots: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(map_ref(&self.ebpf, name::SLOTS)?).map_err(refused)?;
        Ok(slots.keys().filter_map(Result::ok).collect())
    }

    /// The final counts of every process whose exit the programs saw (`RETIRED`), summed over
    /// CPUs; their slots are zeroed and given back to the programs.
    pub fn collect_retired(&mut self) -> Result<Vec<(u32, PidCounters)>, TraceError> {
        let retired: Vec<(u32, u32)> = {
            let map: BpfHashMap<_, u32, u32> =
                BpfHashMap::try_from(map_ref(&self.ebpf, name::RETIRED)?).map_err(refused)?;
            map.iter().filter_map(Result::ok).collect()
        };
        let mut out = Vec::with_capacity(retired.len());
        for (slot, pid) in retired {
            if let Some(c) = self.recycle(slot) {
                out.push((pid, c));
            }
            if let Ok(mut map) =
                BpfHashMap::<_, u32, u32>::try_from(map_mut(&mut self.ebpf, name::RETIRED)?)
            {
                let _ = map.remove(&slot);
            }
        }
        Ok(out)
    }

    /// One live process's counters, summed over CPUs, then forgotten (the process is gone
    /// though the programs saw no exit; call [`Probe::forget`] first, so that no chunk names
    /// the slot when it is given back).
    pub fn take_counters(&mut self, pid: u32) -> Option<PidCounters> {
        let slot = {
            let mut slots: BpfHashMap<_, u32, u32> =
                BpfHashMap::try_from(map_mut(&mut self.ebpf, name::SLOTS).ok()?).ok()?;
            let slot = slots.get(&pid, 0).ok()?;
            slots.remove(&pid).ok()?;
            slot
        };
        self.recycle(slot)
    }

    /// Reads `slot`'s counters, zeroes them and queues the slot for reuse. Best effort after
    /// the read: a slot that cannot be zeroed is not reused (it is lost, not mixed up).
    fn recycle(&mut self, slot: u32) -> Option<PidCounters> {
        let mut counters: PerCpuArray<_, PidCounters> =
            PerCpuArray::try_from(map_mut(&mut self.ebpf, name::COUNTERS).ok()?).ok()?;
        let total = sum(counters.get(&slot, 0).ok()?.iter());
        let zeroed = PerCpuValues::try_from(vec![PidCounters::default(); self.nr_cpus]).ok();
        if let Some(zeroed) = zeroed
            && counters.set(slot, zeroed, 0).is_ok()
            && let Some(Ok(mut free)) = self
                .ebpf
                .map_mut(name::FREE_SLOTS)
                .map(Queue::<_, u32>::try_from)
        {
            let _ = free.push(slot, 0);
        }
        Some(total)
    }

    pub fn drops(&self) -> Result<Drops, TraceError> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map_ref(&self.ebpf, name::DROPS)?).map_err(refused)?;
        let slot = |i: u32| -> Result<u64, TraceError> {
            Ok(map.get(&i, 0).map_err(refused)?.iter().sum())
        };
        Ok(Drops {
            fault_events: slot(DROP_FAULT_EVENTS)?,
            control_events: slot(DROP_CONTROL_EVENTS)?,
            map_full: slot(DROP_MAP_FULL)?,
            traced_full: slot(DROP_TRACED_FULL)?,
            region_cut: slot(DROP_REGION_CUT)?,
            region_unresolved: slot(DROP_REGION_UNRESOLVED)?,
            stacks_lost: slot(DROP_STACKS_LOST)?,
            stacks_full: slot(DROP_STACKS_FULL)?,
        })
    }

    /// The event ring, moved out of the object so it can be polled on its own.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, TraceError> {
        let map = self
            .ebpf
            .take_map(name::EVENTS)
            .ok_or_else(|| TraceError::Internal(format!("map {} missing", name::EVENTS)))?;
        RingBuf::try_from(map).map_err(refused)
    }
}
