//! The trace record schema, shared by every exporter. JSON lines use it as is:
//! `{"type": "<variant in snake_case>", ...fields}`. Field names are stable; new fields may
//! be added, none renamed.

use serde::{Deserialize, Serialize};
use tamalloc_common::{
    abi::{GlobalStats, ProcStats},
    maps::PidCounters,
    trace::{FAULT_KINDS, FaultKind},
};

use super::{
    aggregate::RegionFaults,
    decode::{MadeBy, TraceEvent},
};

/// Version of the schema, written in the first (`meta`) record.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// First record: what produced the trace.
    Meta {
        version: u32,
        tool: String,
        kernel: String,
        /// `syscall` (555/556) or `procfs`.
        stats_source: String,
        /// Whether every fault was streamed (`fault` records present).
        events: bool,
        /// How faults were counted: `kernel` (what the kernel installed) or `tracepoint`
        /// (the page-fault tracepoints); README "What is counted" says what each
        /// guarantees. Empty in traces written before modes existed.
        #[serde(default)]
        mode: String,
        /// Which mappings were followed: `tamalloc` (554's regions), `anon` (every private
        /// anonymous mapping too) or `name:NAME` (ranges named NAME too). Empty in traces
        /// written before `--regions`.
        #[serde(default)]
        follows: String,
    },
    Stats {
        ts_ns: u64,
        pid: u32,
        comm: String,
        vm_size_kib: u64,
        vm_rss_kib: u64,
        rss_anon_kib: u64,
        rss_file_kib: u64,
        rss_shmem_kib: u64,
        oom_score: u32,
        oom_score_adj: i32,
        resident_permille: u32,
        tamalloc_regions: u64,
        tamalloc_reserved_kib: u64,
        tamalloc_resident_kib: u64,
        /// Pages first touched so far, by kind (from the tracer's counters).
        read_zero: u64,
        write_zero: u64,
        cow_zero: u64,
        cow: u64,
        other: u64,
        /// Bytes of live tamalloc region pages the tracer knows of.
        reserved_bytes: u64,
        source: String,
    },
    Global {
        ts_ns: u64,
        nr_processes: u64,
        vm_size_kib: u64,
        vm_rss_kib: u64,
        tamalloc_regions: u64,
        tamalloc_reserved_kib: u64,
        tamalloc_resident_kib: u64,
        mem_total_kib: u64,
        mem_available_kib: u64,
        committed_as_kib: u64,
        commit_limit_kib: u64,
        source: String,
    },
    /// One per process at the end.
    Summary {
        pid: u32,
        comm: String,
        read_zero: u64,
        write_zero: u64,
        cow_zero: u64,
        cow: u64,
        other: u64,
        regions: u64,
        /// First touches of a whole transparent huge page (kernel mode); their pages are
        /// in the kinds' counts, which count pages.
        #[serde(default)]
        huge_faults: u64,
    },
    /// After the summaries, when faults were streamed: one per region with first touches,
    /// its faults by kind (so "this 1 GiB calloc touched 3 %" is one record).
    RegionSummary {
        pid: u32,
        /// The region's identity: its first address when it was made.
        region: u64,
        made_by: MadeBy,
        /// Its length as last made, grown or moved.
        len: u64,
        read_zero: u64,
        write_zero: u64,
        cow_zero: u64,
        cow: u64,
        other: u64,
    },
    /// With `--stacks`, after the region summaries: the pages one call path first touched
    /// in one region of one process, by kind. `frames` are leaf first: the kernel's (when
    /// the kernel made the touch, e.g. `read(2)` into a region), then the user's.
    Stack {
        pid: u32,
        comm: String,
        /// The region's identity, as in `region_summary`; 0 when it could not be named.
        region: u64,
        read_zero: u64,
        write_zero: u64,
        cow_zero: u64,
        cow: u64,
        other: u64,
        frames: Vec<StackFrame>,
    },
    /// Last record: what could not be delivered or stored.
    Drops {
        count: u64,
        fault_events: u64,
        control_events: u64,
        map_full: u64,
        /// Processes to follow that `TRACED` had no room for.
        #[serde(default)]
        traced_full: u64,
        /// Regions cut short: their tail is not counted.
        #[serde(default)]
        region_cut: u64,
        /// Fault events of a forked child naming no region (counts unaffected).
        #[serde(default)]
        region_unresolved: u64,
        /// `--stacks`: first touches whose stack could not be taken (the stack map was
        /// full or the walk failed); their pages are counted, not attributed.
        #[serde(default)]
        stacks_lost: u64,
        /// `--stacks`: first touches whose (process, region, kind, stack) had no room in
        /// the aggregation map; counted, not attributed.
        #[serde(default)]
        stacks_full: u64,
    },
    /// What the programs reported: `region`, `unmap`, `remap`, `fork`, `exec`, `exit` and
    /// `fault` records (the event carries its own `type`).
    #[serde(untagged)]
    Event(TraceEvent),
}

impl Record {
    /// The event a record holds, for tools that replay a trace; `None` for records that
    /// are not events.
    pub fn to_event(&self) -> Option<TraceEvent> {
        match self {
            Record::Event(ev) => Some(*ev),
            _ => None,
        }
    }

    /// The record's time, when it has one.
    pub fn ts_ns(&self) -> Option<u64> {
        match *self {
            Record::Event(ev) => Some(ev.ts_ns()),
            Record::Stats { ts_ns, .. } | Record::Global { ts_ns, .. } => Some(ts_ns),
            Record::Meta { .. }
            | Record::Summary { .. }
            | Record::RegionSummary { .. }
            | Record::Drops { .. }
            | Record::Stack { .. } => None,
        }
    }

    /// A `region_summary` record.
    pub fn region_summary(pid: u32, region: u64, r: &RegionFaults) -> Self {
        let [read_zero, write_zero, cow_zero, cow, other] = r.faults;
        Record::RegionSummary {
            pid,
            region,
            made_by: r.made_by,
            len: r.len,
            read_zero,
            write_zero,
            cow_zero,
            cow,
            other,
        }
    }

    /// A `summary` record from a process's final counters.
    pub fn summary(pid: u32, comm: String, counters: &PidCounters) -> Self {
        // The schema names one field per kind, in `FaultKind::ALL` order (the index).
        let [read_zero, write_zero, cow_zero, cow, other] = counters.faults;
        Record::Summary {
            pid,
            comm,
            read_zero,
            write_zero,
            cow_zero,
            cow,
            other,
            regions: counters.regions,
            huge_faults: counters.huge_faults,
        }
    }

    /// A `stack` record; `pages` by kind (index `kind as usize`).
    pub fn stack(
        pid: u32,
        comm: String,
        region: u64,
        pages: [u64; FAULT_KINDS],
        frames: Vec<StackFrame>,
    ) -> Self {
        let [read_zero, write_zero, cow_zero, cow, other] = pages;
        Record::Stack {
            pid,
            comm,
            region,
            read_zero,
            write_zero,
            cow_zero,
            cow,
            other,
            frames,
        }
    }

    /// A `stack` record's pages by kind (index `kind as usize`).
    pub fn faults_by_kind(&self) -> Option<[u64; FAULT_KINDS]> {
        match *self {
            Record::Stack {
                read_zero,
                write_zero,
                cow_zero,
                cow,
                other,
                ..
            } => Some([read_zero, write_zero, cow_zero, cow, other]),
            _ => None,
        }
    }

    /// The fault counts of a `stats` or `summary` record, by kind (index `kind as usize`):
    /// their fields are named after the kinds ([`FaultKind::name`]).
    pub fn faults(&self) -> Option<[u64; FAULT_KINDS]> {
        if !matches!(self, Record::Stats { .. } | Record::Summary { .. }) {
            return None;
        }
        let fields = serde_json::to_value(self).ok()?;
        let mut out = [0; FAULT_KINDS];
        for k in FaultKind::ALL {
            out[k as usize] = fields.get(k.name())?.as_u64()?;
        }
        Some(out)
    }

    /// A `global` record from syscall 556 (or its /proc equivalent).
    pub fn global(ts_ns: u64, g: &GlobalStats, source: &str) -> Self {
        Record::Global {
            ts_ns,
            nr_processes: g.nr_processes,
            vm_size_kib: g.vm_size_kib,
            vm_rss_kib: g.vm_rss_kib,
            tamalloc_regions: g.tamalloc_regions,
            tamalloc_reserved_kib: g.tamalloc_reserved_kib,
            tamalloc_resident_kib: g.tamalloc_resident_kib,
            mem_total_kib: g.mem_total_kib,
            mem_available_kib: g.mem_available_kib,
            committed_as_kib: g.committed_as_kib,
            commit_limit_kib: g.commit_limit_kib,
            source: source.to_owned(),
        }
    }
}

/// One frame of a `stack` record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFrame {
    /// The instruction's virtual address in the process (or the kernel).
    pub addr: u64,
    /// A kernel frame (symbolized from kallsyms).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel: bool,
    /// The function, demangled; absent when it could not be symbolized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// The object file the address is in (its path when the trace was taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The object's GNU build ID, in hex, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The address's offset in `module`'s file (user frames with a module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_offset: Option<u64>,
    /// Source file and line, when the object has DWARF line info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

impl StackFrame {
    /// The name a profile shows for this frame: the function, or `module+0xOFFSET`, or the
    /// bare address.
    pub fn label(&self) -> String {
        match (&self.function, &self.module, self.file_offset) {
            (Some(f), _, _) => f.clone(),
            (None, Some(m), Some(off)) => {
                let base = m.rsplit('/').next().unwrap_or(m);
                format!("{base}+{off:#x}")
            }
            _ => format!("{:#x}", self.addr),
        }
    }
}

/// Builds a `stats` record from syscall 555's record and the tracer's counters.
pub fn stats_record(ts_ns: u64, s: &ProcStats, counters: &PidCounters, source: &str) -> Record {
    let [read_zero, write_zero, cow_zero, cow, other] = counters.faults;
    Record::Stats {
        ts_ns,
        pid: u32::try_from(s.pid).unwrap_or_default(),
        comm: String::from_utf8_lossy(s.comm_bytes()).into_owned(),
        vm_size_kib: s.vm_size_kib,
        vm_rss_kib: s.vm_rss_kib,
        rss_anon_kib: s.rss_anon_kib,
        rss_file_kib: s.rss_file_kib,
        rss_shmem_kib: s.rss_shmem_kib,
        oom_score: s.oom_score,
        oom_score_adj: s.oom_score_adj,
        resident_permille: s.resident_permille,
        tamalloc_regions: s.tamalloc_regions,
        tamalloc_reserved_kib: s.tamalloc_reserved_kib,
        tamalloc_resident_kib: s.tamalloc_resident_kib,
        read_zero,
        write_zero,
        cow_zero,
        cow,
        other,
        reserved_bytes: counters.reserved_bytes,
        source: source.to_owned(),
    }
}

/// Frames for tests of the formats: a kernel frame, a symbolized user frame and an
/// unsymbolized one.
#[cfg(test)]
pub(crate) fn sample_frames() -> Vec<StackFrame> {
    vec![
        StackFrame {
            addr: 0xffff_ffff_8100_0000,
            kernel: true,
            function: Some("clear_user".into()),
            ..StackFrame::default()
        },
        StackFrame {
            addr: 0x40_1010,
            function: Some("fill".into()),
            module: Some("/usr/bin/demo".into()),
            build_id: Some("abcd".into()),
            file_offset: Some(0x1010),
            file: Some("demo.c".into()),
            line: Some(7),
            ..StackFrame::default()
        },
        StackFrame {
            addr: 0x7f00_0000_2000,
            module: Some("/usr/lib/libc.so.6".into()),
            file_offset: Some(0x2000),
            ..StackFrame::default()
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_serialises_with_the_documented_fields() {
        let counters = PidCounters {
            faults: [1, 2, 3, 4, 5],
            regions: 6,
            reserved_bytes: 0,
            huge_faults: 0,
        };
        let r = Record::summary(7, "demo".into(), &counters);
        let s = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(
            s,
            r#"{"type":"summary","pid":7,"comm":"demo","read_zero":1,"write_zero":2,"cow_zero":3,"cow":4,"other":5,"regions":6,"huge_faults":0}"#
        );
        let back: Option<Record> = serde_json::from_str(&s).ok();
        assert_eq!(back, Some(r));
    }

    #[test]
    fn region_summary_serialises_with_the_documented_fields() {
        let r = Record::region_summary(
            7,
            4096,
            &RegionFaults {
                len: 8192,
                made_by: MadeBy::Brk,
                faults: [1, 2, 3, 4, 5],
            },
        );
        let s = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(
            s,
            r#"{"type":"region_summary","pid":7,"region":4096,"made_by":"brk","len":8192,"read_zero":1,"write_zero":2,"cow_zero":3,"cow":4,"other":5}"#
        );
        let back: Option<Record> = serde_json::from_str(&s).ok();
        assert_eq!(back, Some(r));
    }

    #[test]
    fn each_kind_has_its_field_and_its_count() {
        let mut counters = PidCounters::default();
        for k in FaultKind::ALL {
            counters.faults[k as usize] = 10 + k as u64;
        }
        let abi = ProcStats::default();
        for r in [
            Record::summary(1, String::new(), &counters),
            stats_record(0, &abi, &counters, "procfs"),
        ] {
            assert_eq!(r.faults(), Some(counters.faults));
            let v = serde_json::to_value(&r).unwrap_or_default();
            for k in FaultKind::ALL {
                assert_eq!(v[k.name()], 10 + k as u64, "{} of {v}", k.name());
            }
        }
        let drops: Record = serde_json::from_str(
            r#"{"type":"drops","count":9,"fault_events":9,"control_events":9,"map_full":9}"#,
        )
        .expect("a drops record");
        assert_eq!(drops.faults(), None);
    }

    #[test]
    fn events_are_records_with_their_own_type() {
        let ev = TraceEvent::Fault {
            ts_ns: 1,
            pid: 2,
            tid: 3,
            kind: tamalloc_common::trace::FaultKind::CowZero,
            addr: 4,
            region: 5,
            page: 6,
            error_code: 0,
        };
        let s = serde_json::to_string(&Record::Event(ev)).unwrap_or_default();
        assert_eq!(
            s,
            r#"{"type":"fault","ts_ns":1,"pid":2,"tid":3,"kind":"cow_zero","addr":4,"region":5,"page":6}"#
        );
        let back: Option<Record> = serde_json::from_str(&s).ok();
        assert_eq!(back.and_then(|r| r.to_event()), Some(ev));
        let fork = Record::Event(TraceEvent::Fork {
            ts_ns: 1,
            pid: 2,
            child: 3,
        });
        let s = serde_json::to_string(&fork).unwrap_or_default();
        assert_eq!(s, r#"{"type":"fork","ts_ns":1,"pid":2,"child":3}"#);
        assert_eq!(fork.ts_ns(), Some(1));
        assert_eq!(serde_json::from_str::<Record>(&s).ok(), Some(fork));
        assert!(serde_json::from_str::<Record>(r#"{"type":"fault","kind":"nope"}"#).is_err());
    }
}
