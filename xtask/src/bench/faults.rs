//! Part 2: the slowdown of a fault-heavy workload (`tamalloc-bench faults`) under
//! `tamalloc trace`, `tamalloc trace --events`, `tamalloc record`, `tamalloc trace --output`
//! and bpftrace, interleaved over rounds, with the tracers' footprint; and the in-process A/B
//! (`tamalloc-bench ab`).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    data::{AbRun, Run, Variant},
    plan::{AB_BATCHES, AB_PAGES, BPFTRACE_PROGRAM, Bins, faults_args},
    process::{Spawned, unix_ns, watch_footprint},
    records::{self, Record},
};

pub fn slowdown(bins: &Bins, work: &Path, rounds: u32) -> anyhow::Result<Vec<Run>> {
    // Warm-up: binaries, page tables of the page allocator, bpftrace's start.
    for v in Variant::ALL {
        run_once(bins, work, v, 2, u32::MAX).with_context(|| format!("warm-up {v:?}"))?;
    }
    let mut runs = Vec::new();
    for round in 0..rounds {
        for threads in [1, 2] {
            for i in 0..Variant::ALL.len() {
                let v = Variant::ALL[(i + round as usize) % Variant::ALL.len()];
                let r = run_once(bins, work, v, threads, round)
                    .with_context(|| format!("round {round}, {threads} thread(s), {v:?}"))?;
                eprintln!(
                    "  round {round} threads {threads} {:<9} {:>7.0} faults/s",
                    format!("{v:?}"),
                    r.faults_per_sec
                );
                runs.push(r);
            }
        }
    }
    Ok(runs)
}

/// Runs the workload once under `variant`.
fn run_once(
    bins: &Bins,
    work: &Path,
    variant: Variant,
    threads: u32,
    round: u32,
) -> anyhow::Result<Run> {
    let report = work.join(format!("faults-{round}-{threads}-{variant:?}.json"));
    let _ = fs::remove_file(&report);
    let wl = faults_args(threads, &report);
    let stderr_path = work.join("stderr.txt");
    let stderr = || -> anyhow::Result<Stdio> {
        Ok(fs::File::create(&stderr_path)
            .context("creating a stderr file")?
            .into())
    };
    let stderr_text = || fs::read_to_string(&stderr_path).unwrap_or_default();
    // The workload alone (untraced, or beside a bpftrace that is already running).
    let untraced = || -> anyhow::Result<()> {
        let mut c = Spawned::spawn(
            Command::new(&bins.bench)
                .args(&wl)
                .stdout(Stdio::null())
                .stderr(stderr()?),
        )?;
        c.wait_ok("the workload").with_context(stderr_text)
    };
    let mut startup_ms = None;
    // When `tamalloc trace` was launched: the workload's start time gives its start-up.
    let mut tracer_launched = None;
    let mut footprint = None;
    let mut drops = None;
    match variant {
        Variant::Untraced => {
            untraced()?;
        }
        Variant::Count | Variant::Events | Variant::Record | Variant::Jsonl => {
            let mut cmd = Command::new(&bins.tamalloc);
            let file = work.join("streamed.out");
            match variant {
                Variant::Events => cmd.args(["trace", "--events"]),
                Variant::Record => cmd.args(["record", "-o"]).arg(&file),
                Variant::Jsonl => cmd.args(["trace", "--output"]).arg(&file),
                _ => cmd.arg("trace"),
            };
            // Streaming to a file: stdout holds the summary, for its `drops:` line.
            let summary = work.join("summary.txt");
            let to_file = matches!(variant, Variant::Record | Variant::Jsonl);
            let stdout: Stdio = if to_file {
                fs::File::create(&summary)
                    .context("creating the summary file")?
                    .into()
            } else {
                Stdio::null()
            };
            cmd.arg("--")
                .arg(&bins.bench)
                .args(&wl)
                .stdout(stdout)
                .stderr(stderr()?);
            tracer_launched = Some(unix_ns());
            let mut c = Spawned::spawn(&mut cmd)?;
            let fp = watch_footprint(c.pid());
            c.wait_ok("tamalloc trace").with_context(stderr_text)?;
            footprint = fp.recv_timeout(Duration::from_secs(5)).ok();
            if to_file {
                let text = fs::read_to_string(&summary).unwrap_or_default();
                drops = text
                    .lines()
                    .rfind(|l| l.trim_start().starts_with("drops:"))
                    .map(|l| super::streaming::parse_drops(l).0);
                let _ = fs::remove_file(&file);
            }
        }
        Variant::Bpftrace => {
            let launched = unix_ns();
            let mut bt = Spawned::spawn(
                Command::new("bpftrace")
                    .args(["-e", BPFTRACE_PROGRAM])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null()),
            )?;
            let stdout = bt.take_stdout().context("bpftrace's stdout")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("Attaching") {
                        let _ = tx.send(());
                    }
                }
            });
            rx.recv_timeout(Duration::from_secs(30))
                .context("bpftrace did not attach within 30 s")?;
            startup_ms = Some((unix_ns() - launched) / 1e6);
            // "Attaching" comes just before the attach itself.
            std::thread::sleep(Duration::from_millis(300));
            let fp = watch_footprint(bt.pid());
            untraced()?;
            bt.interrupt(Duration::from_secs(5));
            footprint = fp.recv_timeout(Duration::from_secs(5)).ok();
        }
    }
    let rec = records::faults_report(&report)
        .with_context(|| format!("stderr: {}", stderr_text().trim()))?;
    if let Some(launched) = tracer_launched {
        startup_ms = Some((rec.start_unix_ns as f64 - launched) / 1e6);
    }
    Ok(Run {
        variant,
        threads,
        round,
        elapsed_ns: rec.elapsed_ns as f64,
        faults_per_sec: rec.faults_per_sec,
        startup_ms,
        footprint,
        drops,
    })
}

/// `tamalloc-bench ab` following the workload (its regions, then every anonymous mapping:
/// `--regions anon`) and following nothing, with 1 and 2 threads.
pub fn ab_runs(bench: &Path, quick: bool) -> anyhow::Result<Vec<AbRun>> {
    let (pages, batches) = if quick {
        (AB_PAGES / 2, AB_BATCHES / 2)
    } else {
        (AB_PAGES, AB_BATCHES)
    };
    let mut out = Vec::new();
    for (followed, regions) in [(true, "tamalloc"), (true, "anon"), (false, "tamalloc")] {
        for threads in [1u32, 2] {
            let mut cmd = Command::new(bench);
            cmd.args(["ab", "--threads", &threads.to_string()]).args([
                "--pages",
                &pages.to_string(),
                "--batches",
                &batches.to_string(),
                "--regions",
                regions,
            ]);
            if !followed {
                cmd.arg("--unfollowed");
            }
            let o = cmd
                .stderr(Stdio::inherit())
                .output()
                .context("running tamalloc-bench ab")?;
            if !o.status.success() {
                bail!("tamalloc-bench ab failed: {}", o.status);
            }
            let ab = records::parse(&String::from_utf8_lossy(&o.stdout))?
                .into_iter()
                .find_map(|r| match r {
                    Record::BenchAb(a) => Some(a),
                    _ => None,
                })
                .context("no bench_ab line")?;
            let run = AbRun {
                followed,
                threads,
                regions: regions.to_owned(),
                pages: ab.pages,
                sum_ratio: ab.sum_ratio,
                median_ratio: ab.median_ratio,
            };
            eprintln!(
                "  A/B {} {regions:<8} threads {threads}: {:+.1} % (median of pairs {:+.1} %)",
                if followed { "followed  " } else { "unfollowed" },
                (run.sum_ratio - 1.0) * 100.0,
                (run.median_ratio - 1.0) * 100.0
            );
            out.push(run);
        }
    }
    Ok(out)
}
