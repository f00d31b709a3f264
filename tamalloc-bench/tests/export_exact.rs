//! `tamalloc trace --format csv` and `--events`, against workloads that know their own faults
//! (`tamalloc-bench workload`), on the host kernel: every fault the workload made is one row
//! or line, of its kind.
//!
//! These tests load eBPF programs, so they need root (CI runs as root); without it they
//! fail with that message rather than pass silently.

use std::collections::HashMap;

mod common;

use common::{KINDS, TempDir, json_lines, require_root, trace_workload};

/// The columns README documents, in order.
const CSV_COLUMNS: &str = "type,ts_ns,pid,tid,comm,kind,addr,len,region,page,fallback,region_bytes,old_addr,old_len,new_addr,new_len,child,vm_size_kib,vm_rss_kib,rss_anon_kib,rss_file_kib,rss_shmem_kib,oom_score,oom_score_adj,resident_permille,tamalloc_regions,tamalloc_reserved_kib,tamalloc_resident_kib,read_zero,write_zero,cow_zero,cow,other,reserved_bytes,regions,nr_processes,mem_total_kib,mem_available_kib,committed_as_kib,commit_limit_kib,source,count,fault_events,control_events,map_full,version,tool,kernel,stats_source,events,mode,huge_faults,traced_full,region_cut,made_by,follows,region_unresolved,stacks_lost,stacks_full,frames";

#[test]
fn export_csv_has_the_documented_header_and_one_row_per_record() {
    require_root();
    let dir = TempDir::new("csv");
    trace_workload(
        &["--quiet", "--output", &dir.arg("t.csv"), "--format", "csv"],
        &dir.arg("e.jsonl"),
    );
    let expect = json_lines(&dir.path("e.jsonl"));
    let mut rd = csv::Reader::from_path(dir.path("t.csv")).expect("open csv");
    let header: Vec<String> = rd
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header.join(","), CSV_COLUMNS);
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.expect("a CSV row")).collect();
    assert_eq!(rows.first().map(|r| &r[0]), Some("meta"));
    assert_eq!(rows.last().map(|r| &r[0]), Some("drops"));
    assert!(rows.iter().all(|r| r.len() == header.len()));
    // Fault rows per pid and kind, and summary rows, agree with the workload.
    let mut faults: HashMap<(String, String), u64> = HashMap::new();
    for r in rows.iter().filter(|r| &r[0] == "fault") {
        *faults
            .entry((r[col("pid")].to_owned(), r[col("kind")].to_owned()))
            .or_default() += 1;
    }
    assert_eq!(expect.len(), 2);
    for e in &expect {
        let pid = e["pid"].to_string();
        let summary = rows
            .iter()
            .find(|r| &r[0] == "summary" && r[col("pid")] == pid)
            .unwrap_or_else(|| panic!("no summary row for {pid}"));
        for k in KINDS {
            let want = e[k].as_u64().expect("count");
            let got = faults.get(&(pid.clone(), k.to_owned())).copied();
            assert_eq!(got.unwrap_or(0), want, "pid {pid} {k} fault rows");
            assert_eq!(summary[col(k)], want.to_string(), "pid {pid} {k} summary");
        }
    }
}

#[test]
fn export_events_on_a_pipe_are_one_parseable_line_per_fault() {
    require_root();
    let dir = TempDir::new("events");
    let out = trace_workload(&["--events", "--quiet"], &dir.arg("e.jsonl"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let body = stdout
        .split_once("\nSummary after")
        .map_or(&*stdout, |(b, _)| b);
    // seconds pid tid kind `region` 0xADDR `page` N `addr` 0xADDR
    let mut counts: HashMap<(u64, String), u64> = HashMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let c: Vec<&str> = line.split_whitespace().collect();
        let ok = c.len() == 10
            && c[0].parse::<f64>().is_ok()
            && c[1].parse::<u32>().is_ok()
            && c[2].parse::<u32>().is_ok()
            && KINDS.contains(&c[3])
            && c[4] == "region"
            && c[5].starts_with("0x")
            && c[6] == "page"
            && c[7].parse::<u64>().is_ok()
            && c[8] == "addr"
            && c[9].starts_with("0x");
        assert!(ok, "not a fault line: {line:?}");
        let pid = c[1].parse().unwrap_or(0);
        *counts.entry((pid, c[3].to_owned())).or_default() += 1;
    }
    for e in json_lines(&dir.path("e.jsonl")) {
        let pid = e["pid"].as_u64().expect("pid");
        for k in KINDS {
            assert_eq!(
                counts.get(&(pid, k.to_owned())).copied().unwrap_or(0),
                e[k].as_u64().expect("count"),
                "pid {pid} {k} lines"
            );
        }
    }
}
