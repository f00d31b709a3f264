//! The JSON lines the workloads print (`tamalloc-bench bpf|faults|ab|stats`), and the two
//! criterion files the decoder bench leaves, as typed records. Only the fields the
//! benchmark reads are named; serde skips the others.

use std::{fs, path::Path};

use anyhow::Context as _;
use serde::Deserialize;

use super::data::StatsRow;

/// One line of a workload's output, by its `"type"`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    BpfCost(BpfCost),
    BpfProg(BpfProg),
    BenchFaults(BenchFaults),
    BenchAb(BenchAb),
    BenchStats(StatsRow),
    /// A type the benchmark does not read.
    #[serde(other)]
    Other,
}

/// `tamalloc-bench bpf`: one program of one variant in one round.
#[derive(Debug, Deserialize)]
pub struct BpfCost {
    pub variant: String,
    pub regions: u64,
    pub program: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// write_zero faults the tracer counted for the workload.
    pub counted: u64,
    pub load_ms: f64,
}

/// `tamalloc-bench bpf`: one of the tracer's programs as loaded.
#[derive(Debug, Deserialize)]
pub struct BpfProg {
    pub name: String,
    pub verified_insns: u64,
    pub jited_bytes: u64,
    pub load_ms: f64,
}

/// `tamalloc-bench faults --report FILE`: one timed pass.
#[derive(Debug, Deserialize)]
pub struct BenchFaults {
    pub start_unix_ns: u64,
    pub elapsed_ns: u64,
    pub faults_per_sec: f64,
}

/// `tamalloc-bench ab`: the attached and detached passes summed up.
#[derive(Debug, Deserialize)]
pub struct BenchAb {
    pub pages: u64,
    pub sum_ratio: f64,
    pub median_ratio: f64,
}

/// The records in `text`, one a line from its first `{` (a console line may carry a
/// prefix). Lines that are not a JSON object with a `"type"` are skipped; a record of a
/// known type without the fields it should have is an error.
pub fn parse(text: &str) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(start) = line.find('{') else {
            continue;
        };
        let json = line[start..].trim_end();
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
            continue;
        };
        if value.get("type").and_then(|t| t.as_str()).is_none() {
            continue;
        }
        out.push(
            Record::deserialize(&value).with_context(|| format!("reading the record {json}"))?,
        );
    }
    Ok(out)
}

/// The `bench_faults` record `tamalloc-bench faults --report FILE` wrote to `report`.
pub fn faults_report(report: &Path) -> anyhow::Result<BenchFaults> {
    let text = fs::read_to_string(report)
        .with_context(|| format!("reading the workload's report {}", report.display()))?;
    parse(&text)?
        .into_iter()
        .find_map(|r| match r {
            Record::BenchFaults(f) => Some(f),
            _ => None,
        })
        .with_context(|| format!("no bench_faults record in {}", report.display()))
}

/// Criterion's `new/estimates.json`: the median is what the report shows.
#[derive(Debug, Deserialize)]
pub struct Estimates {
    pub median: Estimate,
}

#[derive(Debug, Deserialize)]
pub struct Estimate {
    pub point_estimate: f64,
}

/// Criterion's `new/benchmark.json`: the throughput the bench declared.
#[derive(Debug, Deserialize)]
pub struct Benchmark {
    pub throughput: Option<Throughput>,
}

/// `{"Elements":N}` (or `{"Bytes":N}`, which leaves `elements` empty).
#[derive(Debug, Deserialize)]
pub struct Throughput {
    #[serde(rename = "Elements")]
    pub elements: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_parsed() {
        let text = concat!(
            r#"{"type":"bench_faults","pid":42,"threads":1,"pages":8,"regions":1,"#,
            r#""path":"a \"b\"","start_unix_ns":1764578000000000000,"elapsed_ns":900,"#,
            r#""faults_per_sec":8888889,"x": 1.5}"#,
            "\nnot json\n",
            r#"{"type":"unknown","pid":1}"#,
            "\n[ 1.0] ",
            r#"{"type":"bench_stats","iterations":21,"procs_syscall":100,"procs_procfs":101,"#,
            r#""syscall_ns":7,"procfs_ns":70,"alloc_batch":64,"tamalloc_ns":3,"mmap_ns":2,"#,
            r#""vmas":12}"#,
            "\r\n",
        );
        let records = parse(text).unwrap();
        assert_eq!(records.len(), 3, "{records:?}");
        assert!(matches!(records[1], Record::Other));
        let Record::BenchFaults(f) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(f.start_unix_ns, 1_764_578_000_000_000_000);
        assert_eq!(f.elapsed_ns, 900);
        assert_eq!(f.faults_per_sec, 8_888_889.0);
        let Record::BenchStats(s) = &records[2] else {
            panic!("{records:?}")
        };
        assert_eq!(s.syscall_ns, 7);
        assert_eq!(s.vmas, 12);
    }

    #[test]
    fn a_known_record_without_its_fields_is_an_error() {
        let err = parse("{\"type\":\"bench_ab\",\"pages\":1}\n").unwrap_err();
        assert!(format!("{err:#}").contains("sum_ratio"), "{err:#}");
        assert!(parse("{\"no_type\":1}\n{ not json }\n").unwrap().is_empty());
    }

    #[test]
    fn bpf_records_are_parsed() {
        let text = concat!(
            r#"{"type":"bpf_cost","round":0,"variant":"tamalloc","regions":1,"#,
            r#""program":"page_fault","id":7,"run_cnt":300,"run_time_ns":24000,"pages":262144,"#,
            r#""elapsed_ns":5,"counted":262144,"load_ms":95.3}"#,
            "\n",
            r#"{"type":"bpf_prog","name":"page_fault","verified_insns":4000,"jited_bytes":2100,"#,
            r#""load_ms":97.0}"#,
        );
        let records = parse(text).unwrap();
        let [Record::BpfCost(c), Record::BpfProg(p)] = records.as_slice() else {
            panic!("{records:?}")
        };
        assert_eq!(
            (c.variant.as_str(), c.regions, c.run_cnt),
            ("tamalloc", 1, 300)
        );
        assert_eq!(
            (c.run_time_ns, c.counted, c.load_ms),
            (24000, 262_144, 95.3)
        );
        assert_eq!((p.name.as_str(), p.verified_insns), ("page_fault", 4000));
        assert_eq!((p.jited_bytes, p.load_ms), (2100, 97.0));
    }

    #[test]
    fn criterion_files_are_parsed() {
        let est: Estimates = serde_json::from_str(
            r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,
            "upper_bound":2.0},"point_estimate":1.5,"standard_error":0.1},
            "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,
            "upper_bound":2.0},"point_estimate":81234.5,"standard_error":0.1},"slope":null}"#,
        )
        .unwrap();
        assert_eq!(est.median.point_estimate, 81234.5);
        let b: Benchmark = serde_json::from_str(
            r#"{"group_id":"decode","function_id":"decode_apply","value_str":null,
            "throughput":{"Elements":4096},"full_id":"decode/decode_apply"}"#,
        )
        .unwrap();
        assert_eq!(b.throughput.and_then(|t| t.elements), Some(4096));
    }
}
