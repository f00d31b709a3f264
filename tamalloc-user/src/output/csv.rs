//! CSV: a header row, then one row per [`Record`]: its `type` first, then the fixed union of
//! every record's fields ([`COLUMNS`]), empty where a record has no such field. A field with
//! the same name means the same thing in every record that has it. A `stack` record's
//! `frames` is one cell: the frames root first, joined by `;` (as in folded stacks).

use std::io::{self, Write};

use serde_json::Value;
use tamalloc_common::trace::{FAULT_KINDS, FaultKind};

use super::stacks::folded;
use crate::tracer::{Sink, record::Record};

/// The columns before the fault kinds'.
const BEFORE_KINDS: [&str; 28] = [
    "type",
    "ts_ns",
    "pid",
    "tid",
    "comm",
    "kind",
    "addr",
    "len",
    "region",
    "page",
    "fallback",
    "region_bytes",
    "old_addr",
    "old_len",
    "new_addr",
    "new_len",
    "child",
    "vm_size_kib",
    "vm_rss_kib",
    "rss_anon_kib",
    "rss_file_kib",
    "rss_shmem_kib",
    "oom_score",
    "oom_score_adj",
    "resident_permille",
    "tamalloc_regions",
    "tamalloc_reserved_kib",
    "tamalloc_resident_kib",
];

/// The columns after them.
const AFTER_KINDS: [&str; 27] = [
    "reserved_bytes",
    "regions",
    "nr_processes",
    "mem_total_kib",
    "mem_available_kib",
    "committed_as_kib",
    "commit_limit_kib",
    "source",
    "count",
    "fault_events",
    "control_events",
    "map_full",
    "version",
    "tool",
    "kernel",
    "stats_source",
    "events",
    // Added with the tracer's modes; appended, so earlier columns keep their places.
    "mode",
    "huge_faults",
    "traced_full",
    "region_cut",
    // Added with `--regions`.
    "made_by",
    "follows",
    // Added with instances (fork shares markers).
    "region_unresolved",
    // Added with `--stacks`.
    "stacks_lost",
    "stacks_full",
    "frames",
];

const N_COLUMNS: usize = BEFORE_KINDS.len() + FAULT_KINDS + AFTER_KINDS.len();

/// [`BEFORE_KINDS`], one column per fault kind ([`FaultKind::ALL`]), [`AFTER_KINDS`].
const fn columns() -> [&'static str; N_COLUMNS] {
    let mut out = [""; N_COLUMNS];
    let mut i = 0;
    while i < BEFORE_KINDS.len() {
        out[i] = BEFORE_KINDS[i];
        i += 1;
    }
    let mut k = 0;
    while k < FAULT_KINDS {
        out[i] = FaultKind::ALL[k].name();
        (i, k) = (i + 1, k + 1);
    }
    let mut a = 0;
    while a < AFTER_KINDS.len() {
        out[i] = AFTER_KINDS[a];
        (i, a) = (i + 1, a + 1);
    }
    out
}

/// The columns, in order. README's "CSV" section documents them.
pub const COLUMNS: &[&str] = &columns();

pub struct Csv<W: Write> {
    out: ::csv::Writer<W>,
    header: bool,
}

impl<W: Write> Csv<W> {
    pub fn new(w: W) -> Self {
        Self {
            out: ::csv::WriterBuilder::new()
                .buffer_capacity(1 << 16)
                .from_writer(w),
            header: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header {
            self.header = true;
            self.out.write_record(COLUMNS)?;
        }
        Ok(())
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

impl<W: Write> Sink for Csv<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        self.header()?;
        let Value::Object(mut fields) = serde_json::to_value(r)? else {
            return Err(io::Error::other("a record is not a JSON object"));
        };
        if let Record::Stack { frames, .. } = r {
            fields.insert("frames".into(), folded::frames(frames).into());
        }
        self.out
            .write_record(COLUMNS.iter().map(|c| cell(fields.get(*c))))?;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.header()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::{
        decode::{MadeBy, TraceEvent},
        record,
    };

    /// One record of every type, with every field set.
    pub(crate) fn every_record() -> Vec<Record> {
        vec![
            Record::Meta {
                version: 1,
                tool: "tamalloc 0.1.0".into(),
                kernel: "6.1".into(),
                stats_source: "procfs".into(),
                events: true,
                mode: "kernel".into(),
                follows: "anon".into(),
            },
            Record::Event(TraceEvent::Region {
                ts_ns: 1,
                pid: 2,
                tid: 3,
                addr: 4,
                len: 5,
                fallback: true,
                made_by: MadeBy::Fallback,
            }),
            Record::Event(TraceEvent::Unmap {
                ts_ns: 1,
                pid: 2,
                addr: 4,
                len: 5,
                region_bytes: 6,
            }),
            Record::Event(TraceEvent::Remap {
                ts_ns: 1,
                pid: 2,
                old_addr: 3,
                old_len: 4,
                new_addr: 5,
                new_len: 6,
            }),
            Record::Event(TraceEvent::Fork {
                ts_ns: 1,
                pid: 2,
                child: 3,
            }),
            Record::Event(TraceEvent::Exec { ts_ns: 1, pid: 2 }),
            Record::Event(TraceEvent::Exit { ts_ns: 1, pid: 2 }),
            Record::Event(TraceEvent::Fault {
                ts_ns: 1,
                pid: 2,
                tid: 3,
                kind: tamalloc_common::trace::FaultKind::WriteZero,
                addr: 4,
                region: 5,
                page: 6,
                error_code: 0,
            }),
            Record::Stats {
                ts_ns: 1,
                pid: 2,
                comm: "a, \"b\"".into(),
                vm_size_kib: 3,
                vm_rss_kib: 4,
                rss_anon_kib: 5,
                rss_file_kib: 6,
                rss_shmem_kib: 7,
                oom_score: 8,
                oom_score_adj: -9,
                resident_permille: 10,
                tamalloc_regions: 11,
                tamalloc_reserved_kib: 12,
                tamalloc_resident_kib: 13,
                read_zero: 14,
                write_zero: 15,
                cow_zero: 16,
                cow: 17,
                other: 18,
                reserved_bytes: 19,
                source: "procfs".into(),
            },
            Record::Global {
                ts_ns: 1,
                nr_processes: 2,
                vm_size_kib: 3,
                vm_rss_kib: 4,
                tamalloc_regions: 5,
                tamalloc_reserved_kib: 6,
                tamalloc_resident_kib: 7,
                mem_total_kib: 8,
                mem_available_kib: 9,
                committed_as_kib: 10,
                commit_limit_kib: 11,
                source: "procfs".into(),
            },
            Record::Summary {
                pid: 2,
                comm: "demo".into(),
                read_zero: 1,
                write_zero: 2,
                cow_zero: 3,
                cow: 4,
                other: 5,
                regions: 6,
                huge_faults: 7,
            },
            Record::RegionSummary {
                pid: 2,
                region: 4096,
                made_by: MadeBy::Brk,
                len: 8192,
                read_zero: 1,
                write_zero: 2,
                cow_zero: 3,
                cow: 4,
                other: 5,
            },
            Record::Stack {
                pid: 2,
                comm: "demo".into(),
                region: 4096,
                read_zero: 1,
                write_zero: 2,
                cow_zero: 3,
                cow: 4,
                other: 5,
                frames: record::sample_frames(),
            },
            Record::Drops {
                count: 1,
                fault_events: 1,
                control_events: 0,
                map_full: 0,
                traced_full: 0,
                region_cut: 0,
                region_unresolved: 0,
                stacks_lost: 2,
                stacks_full: 3,
            },
        ]
    }

    #[test]
    fn columns_cover_every_field_of_every_record() {
        for r in every_record() {
            let Ok(Value::Object(m)) = serde_json::to_value(&r) else {
                panic!("{r:?} is not an object");
            };
            for k in m.keys() {
                assert!(COLUMNS.contains(&k.as_str()), "no column for {k} of {r:?}");
            }
        }
        // The documented order: the kinds between the kernel's counts and the tracer's.
        assert_eq!(
            &COLUMNS[26..35],
            [
                "tamalloc_reserved_kib",
                "tamalloc_resident_kib",
                "read_zero",
                "write_zero",
                "cow_zero",
                "cow",
                "other",
                "reserved_bytes",
                "regions"
            ]
        );
        let mut unique = COLUMNS.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), COLUMNS.len(), "a column is listed twice");
    }

    #[test]
    fn rows_read_back_with_the_same_values() {
        let mut buf = Vec::new();
        {
            let mut sink = Csv::new(&mut buf);
            for r in every_record() {
                sink.record(&r).expect("record");
            }
            sink.finish().expect("finish");
        }
        let mut rd = ::csv::Reader::from_reader(buf.as_slice());
        let header: Vec<String> = rd
            .headers()
            .expect("header")
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(header, COLUMNS);
        let rows: Vec<::csv::StringRecord> = rd.records().map(|r| r.expect("row")).collect();
        assert_eq!(rows.len(), every_record().len());
        let col = |name: &str| COLUMNS.iter().position(|c| *c == name).expect("column");
        let stats = &rows[8];
        assert_eq!(&stats[0], "stats");
        assert_eq!(&stats[col("comm")], "a, \"b\"");
        assert_eq!(&stats[col("oom_score_adj")], "-9");
        assert_eq!(&stats[col("tid")], "");
        assert_eq!(&rows[1][col("fallback")], "true");
        assert_eq!(&rows[7][col("kind")], "write_zero");
        let stack = &rows[12];
        assert_eq!(&stack[0], "stack");
        assert_eq!(&stack[col("region")], "4096");
        assert_eq!(&stack[col("cow")], "4");
        assert_eq!(
            &stack[col("frames")],
            "libc.so.6+0x2000;fill;clear_user_[k]"
        );
        assert_eq!(&rows[13][col("stacks_full")], "3");
    }

    #[test]
    fn an_empty_trace_still_has_the_header() {
        let mut buf = Vec::new();
        Csv::new(&mut buf).finish().expect("finish");
        assert_eq!(String::from_utf8_lossy(&buf).trim_end(), COLUMNS.join(","));
    }
}
