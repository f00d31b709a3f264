//! `tamalloc trace --prometheus ADDR`: the session's counters in the Prometheus exposition
//! format (OpenMetrics text) at `http://ADDR/metrics`.
//!
//! [`PrometheusView`] is a [`View`]: each refresh copies the snapshot into the registry
//! (events and the end change nothing), so it runs beside the normal view under a
//! [`Tee`](super::Tee). [`serve`] answers `GET /metrics` on the session's tokio runtime;
//! it is a deliberately small HTTP/1.1 server (one request per connection, then close).
//!
//! Metrics, per GROUP as `--prometheus-by` chooses ([`GroupBy`]): `{pid,comm}` (one series
//! per process), `{comm}` (the default) or `{cgroup}`:
//! - `tamalloc_faults_total{GROUP,kind}`: first-touch faults in tamalloc regions;
//! - `tamalloc_reserved_bytes{GROUP}`: bytes of live regions the tracer knows of;
//! - `tamalloc_resident_bytes{GROUP}`: resident region bytes (syscall 555 or /proc);
//! - `tamalloc_vm_rss_bytes{GROUP}`: VmRSS;
//! - `tamalloc_processes{GROUP}` (comm and cgroup only): live processes, so that the
//!   gauges, sums over them, can be read per process;
//! - `tamalloc_dropped_events_total{kind}`: `fault_events`, `control_events`, `map_full`.
//!
//! A group's counters never decrease: each process's new faults go to the group it is in
//! at that refresh ([`group`] says how exec, exit and pid reuse are handled). The gauges of
//! a group without a live process are removed; its fault counters stay.

pub mod group;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tamalloc_common::trace::FaultKind;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

pub use self::group::GroupBy;
use self::group::{Group, Grouper};
use crate::tracer::{Snapshot, View, decode::TraceEvent};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct FaultLabels {
    group: Group,
    kind: &'static str,
}

impl EncodeLabelSet for FaultLabels {
    fn encode(&self, mut enc: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.group.encode_labels(&mut enc)?;
        ("kind", self.kind).encode(enc.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    kind: &'static str,
}

/// The metrics a session exports, and what they were last set from.
pub struct PrometheusView {
    grouper: Grouper,
    faults: Family<FaultLabels, Counter>,
    reserved: Family<Group, Gauge>,
    resident: Family<Group, Gauge>,
    vm_rss: Family<Group, Gauge>,
    /// Registered for comm and cgroup only.
    processes: Family<Group, Gauge>,
    dropped: Family<DropLabels, Counter>,
    /// Groups whose gauges are set, to remove them when their last live process goes.
    live: HashSet<Group>,
    seen_drops: HashMap<&'static str, u64>,
}

/// A new view grouping by `by`, and the registry it fills, for [`serve`].
pub fn metrics(by: GroupBy) -> (PrometheusView, Arc<Registry>) {
    view_with(Grouper::new(by), by)
}

fn view_with(grouper: Grouper, by: GroupBy) -> (PrometheusView, Arc<Registry>) {
    let mut reg = Registry::default();
    let v = PrometheusView {
        grouper,
        faults: Family::default(),
        reserved: Family::default(),
        resident: Family::default(),
        vm_rss: Family::default(),
        processes: Family::default(),
        dropped: Family::default(),
        live: HashSet::new(),
        seen_drops: HashMap::new(),
    };
    reg.register(
        "tamalloc_faults",
        format!(
            "First-touch page faults in tamalloc regions, by {} and kind",
            by.noun()
        ),
        v.faults.clone(),
    );
    reg.register(
        "tamalloc_reserved_bytes",
        "Bytes of live tamalloc regions the tracer knows of",
        v.reserved.clone(),
    );
    reg.register(
        "tamalloc_resident_bytes",
        "Resident bytes of tamalloc regions (syscall 555 or /proc)",
        v.resident.clone(),
    );
    reg.register("tamalloc_vm_rss_bytes", "VmRSS", v.vm_rss.clone());
    if by != GroupBy::Pid {
        reg.register(
            "tamalloc_processes",
            format!("Live traced processes, by {}", by.noun()),
            v.processes.clone(),
        );
    }
    reg.register(
        "tamalloc_dropped_events",
        "Events that could not be delivered, or region state that did not fit",
        v.dropped.clone(),
    );
    (v, Arc::new(reg))
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl View for PrometheusView {
    fn event(&mut self, _ev: &TraceEvent) {}

    fn refresh(&mut self, snap: &Snapshot) {
        let up = self.grouper.update(&snap.rows);
        for (group, deltas) in up.faults {
            for kind in FaultKind::ALL {
                let labels = FaultLabels {
                    group: group.clone(),
                    kind: kind.name(),
                };
                // Created at zero too: present from the first scrape on.
                self.faults
                    .get_or_create(&labels)
                    .inc_by(deltas[kind as usize]);
            }
        }
        for gone in self.live.iter().filter(|g| !up.live.contains_key(*g)) {
            self.reserved.remove(gone);
            self.resident.remove(gone);
            self.vm_rss.remove(gone);
            self.processes.remove(gone);
        }
        self.live.clear();
        for (group, (n, sums)) in up.live {
            self.processes.get_or_create(&group).set(gauge(n));
            if let Some([reserved, resident, rss]) = sums {
                self.reserved.get_or_create(&group).set(gauge(reserved));
                self.resident.get_or_create(&group).set(gauge(resident));
                self.vm_rss.get_or_create(&group).set(gauge(rss));
            }
            self.live.insert(group);
        }
        let d = &snap.drops;
        for (kind, total) in [
            ("fault_events", d.fault_events),
            ("control_events", d.control_events),
            ("map_full", d.map_full),
        ] {
            let seen = self.seen_drops.entry(kind).or_insert(0);
            let c = self.dropped.get_or_create(&DropLabels { kind });
            if total > *seen {
                c.inc_by(total - *seen);
                *seen = total;
            }
        }
    }

    fn finish(&mut self, _snap: &Snapshot) {}
}

/// The registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut body = String::new();
    // Writing to a String cannot fail; an encoder error would leave a partial body.
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        body.clear();
    }
    body
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers HTTP requests on `listener` until the runtime stops: `GET /metrics` with the
/// registry, anything else with 404 or 405.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            // A slow or silent client gets dropped; the server goes on.
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &registry)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > 16 * 1024 {
            break;
        }
    }
    let line = req
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", CONTENT_TYPE, render(registry)),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "tamalloc trace: metrics at /metrics\n".to_owned(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found; try /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::{Row, aggregate::ProcState};

    fn snapshot(write_zero: u64, exited: bool) -> Snapshot {
        let mut state = ProcState {
            comm: "demo".into(),
            exited,
            counted: true,
            ..Default::default()
        };
        state.counters.faults[FaultKind::WriteZero as usize] = write_zero;
        state.counters.reserved_bytes = 8192;
        let stats = tamalloc_common::abi::ProcStats {
            vm_rss_kib: 100,
            tamalloc_resident_kib: 4,
            ..Default::default()
        };
        Snapshot {
            elapsed: Duration::ZERO,
            rows: vec![Row {
                pid: 42,
                state,
                stats: (!exited).then_some(stats),
                rss_delta_kib: None,
            }],
            global: None,
            drops: crate::tracer::Drops {
                fault_events: 3,
                ..Default::default()
            },
            stats_source: "procfs",
            command_status: None,
            stacks: Vec::new(),
        }
    }

    #[test]
    fn counters_follow_the_tracer_totals() {
        let (mut view, reg) = metrics(GroupBy::Pid);
        view.refresh(&snapshot(5, false));
        view.refresh(&snapshot(7, false));
        let text = render(&reg);
        assert!(
            text.contains(r#"tamalloc_faults_total{pid="42",comm="demo",kind="write_zero"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tamalloc_faults_total{pid="42",comm="demo",kind="read_zero"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tamalloc_reserved_bytes{pid="42",comm="demo"} 8192"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tamalloc_resident_bytes{pid="42",comm="demo"} 4096"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tamalloc_vm_rss_bytes{pid="42",comm="demo"} 102400"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tamalloc_dropped_events_total{kind="fault_events"} 3"#),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert!(!text.contains("tamalloc_processes"), "per pid: {text}");
        // Exited: the gauges go, the counters stay.
        view.refresh(&snapshot(7, true));
        let text = render(&reg);
        assert!(!text.contains("tamalloc_vm_rss_bytes{"), "{text}");
        assert!(text.contains(r#"kind="write_zero"} 7"#), "{text}");
    }

    #[test]
    fn by_comm_sums_and_counts_processes() {
        let (mut view, reg) = metrics(GroupBy::Comm);
        let mut snap = snapshot(5, false);
        let mut other = snap.rows[0].clone();
        other.pid = 43;
        snap.rows.push(other);
        view.refresh(&snap);
        let text = render(&reg);
        for line in [
            r#"tamalloc_faults_total{comm="demo",kind="write_zero"} 10"#,
            r#"tamalloc_faults_total{comm="demo",kind="read_zero"} 0"#,
            r#"tamalloc_reserved_bytes{comm="demo"} 16384"#,
            r#"tamalloc_processes{comm="demo"} 2"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("pid="), "{text}");
        // Both exited: the gauges go (the process count too), the counters stay.
        for r in &mut snap.rows {
            r.state.exited = true;
            r.stats = None;
        }
        view.refresh(&snap);
        let text = render(&reg);
        assert!(!text.contains("tamalloc_processes{"), "{text}");
        assert!(!text.contains("tamalloc_reserved_bytes{"), "{text}");
        assert!(text.contains(r#"kind="write_zero"} 10"#), "{text}");
    }

    #[test]
    fn by_cgroup_labels_the_cgroup() {
        let (mut view, reg) = view_with(
            Grouper::with_cgroup_reader(GroupBy::Cgroup, |_| Some("/a/b".into())),
            GroupBy::Cgroup,
        );
        view.refresh(&snapshot(5, false));
        let text = render(&reg);
        assert!(
            text.contains(r#"tamalloc_faults_total{cgroup="/a/b",kind="write_zero"} 5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tamalloc_processes{cgroup="/a/b"} 1"#),
            "{text}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_metrics_over_http() {
        let (mut view, reg) = metrics(GroupBy::Comm);
        view.refresh(&snapshot(1, false));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, reg));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: application/openmetrics-text"),
            "{ok}"
        );
        assert!(ok.contains("tamalloc_faults_total{"), "{ok}");
        let missing = get("/nope").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
