//! `tamalloc trace --prometheus ADDR`, scraped by a real Prometheus server (Debian's
//! `prometheus` package, /usr/bin/prometheus, installed by `cargo xtask setup`), on loopback
//! with free ports, a 1 s scrape interval and a temporary TSDB. The values are read back
//! through Prometheus' HTTP query API and compared with the demo's own counts, under each
//! `--prometheus-by` grouping (pid, comm: the default, cgroup).
//!
//! The tracing tests load eBPF programs, so they need root (CI runs as root); without it, or
//! without the prometheus binary, it fails with that message rather than pass silently.
//! Every wait is bounded; Prometheus and the tracer are stopped when the test ends, however
//! it ends.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;

use common::{KINDS, TempDir, bin, require_root};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A child process stopped (SIGINT, then SIGKILL) and reaped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET path` over HTTP/1.0: (status, body), or None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: each result's labels and value.
fn query(port: u16, q: &str) -> Vec<(Value, f64)> {
    let Some((200, body)) = get(port, &format!("/api/v1/query?query={}", encode(q))) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| {
                    let val = x["value"][1].as_str()?.parse().ok()?;
                    Some((x["metric"].clone(), val))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `check` until it returns Some, for at most `secs` seconds.
fn poll<T>(secs: u64, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = check() {
            return Some(t);
        }
        if Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_prometheus(dir: &Path, target: u16) -> (Guard, u16) {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "this test needs {PROMETHEUS}: run `cargo xtask setup` (or apt-get install prometheus)"
    );
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: tamalloc\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let child = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let guard = Guard(child);
    let ready = poll(60, || match get(port, "/-/ready") {
        Some((200, _)) => Some(()),
        _ => None,
    });
    // Prometheus applies new targets a few seconds after start: wait for its first scrape
    // (`up` is 0 while nothing listens), so it scrapes the whole traced run.
    let scraping = ready.and_then(|()| {
        poll(60, || {
            query(port, r#"up{job="tamalloc"}"#).first().map(|_| ())
        })
    });
    assert!(
        scraping.is_some(),
        "prometheus did not become ready and scrape in 60s:\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    (guard, port)
}

/// `--prometheus-by`: what the demo's series are labelled with.
#[derive(Clone, Copy)]
enum By {
    Pid,
    /// The default: run without the flag.
    Comm,
    Cgroup,
}

/// The cgroup v2 path of this process (its children, the demo among them, inherit it).
fn own_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("this test needs cgroup v2 (a 0:: line): {text}"))
        .to_owned()
}

// One at a time: each run starts a Prometheus and a tracer on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn prometheus_scrapes_the_tracer_and_sees_the_demo_counts() {
    scrape_the_demo(By::Pid);
}

#[test]
fn prometheus_by_comm_is_the_default_and_sums_under_the_comm() {
    scrape_the_demo(By::Comm);
}

#[test]
fn prometheus_by_cgroup_sums_under_the_cgroup() {
    scrape_the_demo(By::Cgroup);
}

/// Traces the demo with `--prometheus`, grouped as `by` says, and checks through
/// Prometheus' query API that the demo's counts and gauges appear under its group.
fn scrape_the_demo(by: By) {
    require_root();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("prometheus");
    let target = free_port();
    let (_prometheus, prom) = start_prometheus(dir.dir(), target);

    // The shell keeps the tracer (and its endpoint) alive after the demo has printed its
    // counts, until the guard interrupts it.
    let script = format!(
        "{} demo --size 8MiB --rate 4MiB/s --hold 3s; exec sleep 600",
        bin()
    );
    let mut trace = Command::new(bin())
        .args(["trace", "--quiet", "--interval", "200ms", "--prometheus"])
        .arg(format!("127.0.0.1:{target}"))
        .args(match by {
            By::Pid => vec!["--prometheus-by", "pid"],
            By::Comm => vec![],
            By::Cgroup => vec!["--prometheus-by", "cgroup"],
        })
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tamalloc trace");
    let stdout = trace.stdout.take().expect("stdout");
    let _trace = Guard(trace);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let demo: Value = loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) if l.starts_with(r#"{"type":"demo""#) => {
                break serde_json::from_str(&l).expect("demo line is JSON");
            }
            Ok(_) => {}
            Err(e) => panic!("no demo summary line from the tracer's command: {e}"),
        }
    };
    let pid = demo["pid"].as_u64().expect("pid");
    // The demo's series, and the labels a series of that grouping has (besides `kind`).
    let (selector, labels): (String, &[&str]) = match by {
        By::Pid => (format!(r#"pid="{pid}",comm="tamalloc""#), &["pid", "comm"]),
        By::Comm => (r#"comm="tamalloc""#.to_owned(), &["comm"]),
        By::Cgroup => (format!(r#"cgroup="{}""#, own_cgroup()), &["cgroup"]),
    };
    let shaped = |m: &Value| {
        ["pid", "comm", "cgroup"]
            .iter()
            .all(|l| labels.contains(l) == m.get(l).is_some())
    };

    // The counters, as Prometheus scraped them, reach the demo's counts (the only counted
    // process of the trace, so alone in its comm and cgroup).
    let mut last = Vec::new();
    let matched = poll(60, || {
        last = query(prom, &format!("tamalloc_faults_total{{{selector}}}"));
        KINDS
            .iter()
            .all(|k| {
                last.iter().any(|(m, v)| {
                    m["kind"] == *k && shaped(m) && Some(*v as u64) == demo[k].as_u64()
                })
            })
            .then_some(())
    });
    assert!(
        matched.is_some(),
        "Prometheus has {last:?}, the demo counted {demo}"
    );
    assert!(demo["write_zero"].as_u64() > Some(0));

    // The gauges, while the demo held its region.
    let gauge = |name: &str| {
        poll(30, || {
            query(prom, &format!("max_over_time({name}{{{selector}}}[10m])"))
                .first()
                .map(|r| r.1)
        })
        .unwrap_or_else(|| panic!("no {name} for {selector}"))
    };
    assert_eq!(
        gauge("tamalloc_reserved_bytes") as u64,
        demo["len"].as_u64().expect("len")
    );
    assert!(gauge("tamalloc_vm_rss_bytes") > 0.0);
    assert!(gauge("tamalloc_resident_bytes") >= 0.0);
    match by {
        By::Pid => assert!(query(prom, "tamalloc_processes").is_empty()),
        _ => assert_eq!(gauge("tamalloc_processes"), 1.0),
    }
    let drops = query(prom, "tamalloc_dropped_events_total");
    for k in ["fault_events", "control_events", "map_full"] {
        assert!(
            drops.iter().any(|(m, _)| m["kind"] == k),
            "no dropped_events kind {k}: {drops:?}"
        );
    }
    let up = query(prom, r#"up{job="tamalloc"}"#);
    assert_eq!(up.first().map(|r| r.1), Some(1.0), "{up:?}");
}

#[test]
fn prometheus_port_in_use_is_one_clear_line() {
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr");
    let out = Command::new(bin())
        .args(["trace", "--duration", "1s", "--prometheus"])
        .arg(addr.to_string())
        .output()
        .expect("run tamalloc trace");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}: Address already in use")),
        "{err}"
    );
    let out = Command::new(bin())
        .args(["trace", "--prometheus", "localhost"])
        .output()
        .expect("run tamalloc trace");
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
