//! One tracing session: load the probe, optionally spawn the command to follow, then pump
//! ring-buffer events and periodic counter/stat snapshots into the aggregator, the view and
//! the exporter until the command ends, the duration passes, or SIGINT/SIGTERM arrives.
//! Every way out goes through the same final drain, so the export is always complete.

use std::{
    collections::HashSet,
    process::ExitStatus,
    time::{Duration, Instant},
};

use tamalloc_common::trace::Event;
use tokio::{
    io::unix::AsyncFd,
    process::Child,
    signal::unix::{SignalKind, signal},
};

use super::{
    Probe, ProbeOptions, Regions, TraceError,
    aggregate::Aggregator,
    command::{self, CommandStdio, spawn_followed},
    decode::{TraceEvent, decode},
    record::{Record, SCHEMA_VERSION, stats_record},
    sink::{Row, Sink, Snapshot, View},
    stacks::StackTable,
};
use crate::stats;

/// Ring records handled per wake-up before yielding, so timers and signals stay timely.
const DRAIN_BATCH: usize = 4096;
/// The programs wake the reader for fault events only once a batch waits in the ring
/// (`Config::wakeup_bytes`); it drains this often anyway, so a quiet trace is not late.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct TraceOptions {
    pub probe: ProbeOptions,
    /// A command to spawn and follow (with its descendants); the trace ends when it exits.
    pub command: Vec<String>,
    /// Where the command's standard streams go (ours, unless a live view owns the terminal).
    pub command_stdio: CommandStdio,
    pub duration: Option<Duration>,
    pub interval: Duration,
}

struct Session {
    probe: Probe,
    agg: Aggregator,
    sink: Option<Box<dyn Sink + Send>>,
    view: Box<dyn View>,
    started: Instant,
    stats_source: &'static str,
    command_status: Option<ExitStatus>,
    sink_error: Option<std::io::Error>,
    /// Threads the sink has been given a name for (or had none to give).
    threads: HashSet<(u32, u32)>,
    /// `--stacks`: the stacks seen so far, normalized.
    stacks: Option<StackTable>,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, so stats records and
/// events share one time line.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// How a session ended.
#[derive(Debug)]
pub struct Outcome {
    /// The final snapshot (the view's summary).
    pub last: Snapshot,
    /// How the followed command ended, when its end ended the trace (`None` when the trace
    /// ended first, on its duration or a signal, and killed it).
    pub command: Option<ExitStatus>,
}

/// Runs a session to its end.
pub async fn run(
    opts: TraceOptions,
    sink: Option<Box<dyn Sink + Send>>,
    view: Box<dyn View>,
) -> Result<Outcome, TraceError> {
    let started = Instant::now();
    let mut probe = Probe::load(&opts.probe)?;
    let ring = probe.take_events()?;
    // SAFETY: the ring owns its map fd and keeps it open for as long as the AsyncFd lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| TraceError::Io {
            what: "polling the event ring buffer".into(),
            source: e.into_parts().1,
        })?;
    let stats_source = match stats::global_stats() {
        Ok(g) if g.source == stats::Source::Syscall => "syscall",
        _ => "procfs",
    };
    let mut s = Session {
        started,
        probe,
        agg: Aggregator::new(),
        sink,
        view,
        stats_source,
        command_status: None,
        sink_error: None,
        threads: HashSet::new(),
        stacks: opts.probe.stacks.then(StackTable::new),
    };
    s.emit(&Record::Meta {
        version: SCHEMA_VERSION,
        tool: format!("tamalloc {}", env!("CARGO_PKG_VERSION")),
        kernel: kernel_release(),
        stats_source: stats_source.to_owned(),
        events: opts.probe.stream_faults,
        mode: s.probe.mode().name().to_owned(),
        follows: opts.probe.regions.to_string(),
    });

    // As bpftrace does: one line on stderr once every probe is in place.
    eprintln!(
        "Attached {} probes ({} mode{}) in {} ms. Tracing{}... Hit Ctrl-C to end.",
        s.probe.attachments(),
        s.probe.mode(),
        match &opts.probe.regions {
            Regions::Tamalloc => String::new(),
            Regions::Anon => ", every anonymous mapping".to_owned(),
            Regions::Named(n) => format!(", mappings named [anon:{n}]"),
        },
        s.started.elapsed().as_millis(),
        match opts.command.first() {
            Some(c) => format!(" `{c}`"),
            None => String::new(),
        }
    );
    // After the "Attached" line, which scripts wait for as the first one.
    if let Some(why) = s.probe.fallback_reason() {
        eprintln!("tamalloc: tracepoint mode: {why}");
    }
    if let Some(why) = s.probe.regions_note() {
        eprintln!("tamalloc: {why}");
    }
    let mut child = match opts.command.split_first() {
        Some((program, args)) => {
            let child = spawn_followed(&mut s.probe, program, args, &opts.command_stdio)?;
            if let (Some(t), Some(pid), Some(path)) =
                (&mut s.stacks, child.id(), command::resolve(program))
            {
                t.learn_command(pid, &path);
            }
            Some(child)
        }
        None => None,
    };
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |e| TraceError::Io { what, source: e }
    };
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("handling SIGINT"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("handling SIGTERM"))?;
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let sleep_until = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until);
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(io_err("polling the event ring buffer"))?;
                let n = s.drain(guard.get_inner_mut(), DRAIN_BATCH)?;
                if n < DRAIN_BATCH {
                    guard.clear_ready();
                }
            }
            _ = drain_tick.tick() => {
                s.drain(ring.get_mut(), DRAIN_BATCH)?;
            }
            _ = tick.tick() => {
                s.refresh(false)?;
            }
            status = wait_child(&mut child) => {
                s.command_status = status.ok();
                break;
            }
            _ = &mut sleep_until => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    // Whatever ended the trace: stop the programs, then deliver everything already in the
    // ring (bounded now), then read the counters, which can no longer move.
    s.probe.detach();
    s.drain(ring.get_mut(), usize::MAX)?;
    let mut snap = s.refresh(true)?;
    let summaries: Vec<Record> = s
        .agg
        .procs()
        .map(|(pid, p)| Record::summary(*pid, p.comm.clone(), &p.counters))
        .collect();
    for rec in &summaries {
        s.emit(rec);
    }
    let regions: Vec<Record> = s
        .agg
        .procs()
        .flat_map(|(pid, p)| {
            p.all_regions()
                .filter(|(_, r)| r.faults.iter().any(|&n| n != 0))
                .map(|(id, r)| Record::region_summary(*pid, id, r))
        })
        .collect();
    for rec in &regions {
        s.emit(rec);
    }
    if let Some(mut table) = s.stacks.take() {
        let agg = &s.agg;
        let comm = |pid| agg.get(pid).map(|p| p.comm.clone()).unwrap_or_default();
        let sym = table.finish(&s.probe, comm)?;
        for rec in &sym.records {
            s.emit(rec);
        }
        eprintln!(
            "tamalloc: stacks: {} call paths, {} of {} frames not symbolized",
            sym.records.len(),
            sym.unresolved,
            sym.frames
        );
        snap.stacks = sym.records;
    }
    s.emit(&Record::Drops {
        count: snap.drops.total(),
        fault_events: snap.drops.fault_events,
        control_events: snap.drops.control_events,
        map_full: snap.drops.map_full,
        traced_full: snap.drops.traced_full,
        region_cut: snap.drops.region_cut,
        region_unresolved: snap.drops.region_unresolved,
        stacks_lost: snap.drops.stacks_lost,
        stacks_full: snap.drops.stacks_full,
    });
    if let Some(sink) = s.sink.as_mut()
        && let Err(e) = sink.finish()
    {
        s.sink_error.get_or_insert(e);
    }
    s.view.finish(&snap);
    if let Some(e) = s.sink_error {
        return Err(TraceError::Io {
            what: "writing the trace output".into(),
            source: e,
        });
    }
    // A command still running (the trace ended first) is killed as `child` drops.
    Ok(Outcome {
        command: s.command_status,
        last: snap,
    })
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn emit(&mut self, r: &Record) {
        self.write_sink(|sink| sink.record(r));
    }

    /// Hands something to the sink; after a write error, the sink is dropped (the first
    /// error is reported at the end).
    fn write_sink(&mut self, write: impl FnOnce(&mut (dyn Sink + Send)) -> std::io::Result<()>) {
        if let Some(sink) = self.sink.as_mut()
            && let Err(e) = write(sink.as_mut())
        {
            // Keep tracing; report the first write error at the end.
            self.sink_error.get_or_insert(e);
            self.sink = None;
        }
    }

    /// Gives the sink the name of a thread it has not seen, before the thread's first record
    /// (read now, while the thread that just faulted most likely still runs).
    fn name_thread(&mut self, pid: u32, tid: u32) {
        if tid == pid || self.sink.is_none() || !self.threads.insert((pid, tid)) {
            return;
        }
        if let Some(sink) = self.sink.as_mut()
            && let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
            && !c.trim_end().is_empty()
        {
            sink.thread_name(pid, tid, c.trim_end());
        }
    }

    /// Handles up to `max` ring records; returns how many there were.
    fn drain(
        &mut self,
        ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
        max: usize,
    ) -> Result<usize, TraceError> {
        let mut n = 0;
        while n < max {
            let Some(item) = ring.next() else { break };
            // A copy, so the ring's space is given back before the maps are read below.
            let mut raw = [0u8; size_of::<Event>()];
            let len = item.len().min(raw.len());
            raw[..len].copy_from_slice(&item[..len]);
            drop(item);
            n += 1;
            let Some(ev) = decode(&raw[..len]) else {
                continue;
            };
            self.agg.apply(&ev);
            match ev {
                TraceEvent::Exit { .. } => self.collect_exited()?,
                TraceEvent::Region { pid, .. }
                | TraceEvent::Fork { child: pid, .. }
                | TraceEvent::Exec { pid, .. } => {
                    fill_comm(&mut self.agg, pid);
                    // A new image (its first region, a fork's copy, an exec) is learnt once.
                    if let Some(t) = &mut self.stacks {
                        t.learn_process(pid, self.probe.instance(pid)?);
                    }
                }
                _ => {}
            }
            if let TraceEvent::Fault { pid, tid, .. } | TraceEvent::Region { pid, tid, .. } = ev {
                self.name_thread(pid, tid);
            }
            self.write_sink(|sink| sink.event_bytes(&raw[..len], &ev));
            self.view.event(&ev);
        }
        if n > 0 {
            self.view.flush();
        }
        Ok(n)
    }

    /// Final counts of the processes whose exit the programs saw (their slots are retired).
    fn collect_exited(&mut self) -> Result<(), TraceError> {
        for (pid, c) in self.probe.collect_retired()? {
            self.agg.finish(pid, c);
        }
        Ok(())
    }

    /// Reads counters and stats, records them, and refreshes the view.
    fn refresh(&mut self, last: bool) -> Result<Snapshot, TraceError> {
        let ts = monotonic_ns();
        // Exits whose events were dropped.
        self.collect_exited()?;
        // Entries of address spaces that ended (exit, exec).
        self.probe.collect_dead()?;
        // New stacks, normalized while their processes run.
        if let Some(t) = &mut self.stacks {
            t.refresh(&self.probe)?;
        }
        // Processes gone without an exit the programs could act on: the leader left with
        // exit(2) before its threads, or a thread's syscall ending after the exit gave the
        // process a slot again. Their regions and final counts.
        for pid in self.probe.slot_pids()? {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.probe.forget(pid)?;
                if let Some(c) = self.probe.take_counters(pid) {
                    self.agg.finish(pid, c);
                }
            }
        }
        for (pid, c) in self.probe.counters()? {
            self.agg.set_counters(pid, c);
        }
        let mut rows = Vec::new();
        let pids: Vec<u32> = self.agg.procs().map(|(p, _)| *p).collect();
        for pid in pids {
            let mut stats = None;
            let mut rss_delta_kib = None;
            let exited = self.agg.get(pid).is_none_or(|p| p.exited);
            if !exited {
                match stats::proc_stats(pid) {
                    Ok(s) => {
                        let p = self.agg.get_mut(pid);
                        // exec and prctl(PR_SET_NAME) change it.
                        p.comm = s.comm();
                        rss_delta_kib = p
                            .last_rss_kib
                            .map(|prev| s.raw.vm_rss_kib as i64 - prev as i64);
                        p.last_rss_kib = Some(s.raw.vm_rss_kib);
                        let counters = p.counters;
                        self.emit(&stats_record(ts, &s.raw, &counters, self.stats_source));
                        stats = Some(s.raw);
                    }
                    // Gone without an exit event: its counts were collected above.
                    Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                        self.agg.get_mut(pid).exited = true;
                    }
                    Err(_) => {}
                }
            }
            if let Some(state) = self.agg.get(pid) {
                rows.push(Row {
                    pid,
                    state: state.clone(),
                    stats,
                    rss_delta_kib,
                });
            }
        }
        let global = stats::global_stats().ok().map(|g| g.raw);
        if let Some(g) = &global {
            self.emit(&Record::global(ts, g, self.stats_source));
        }
        let snap = Snapshot {
            elapsed: self.started.elapsed(),
            rows,
            global,
            drops: self.probe.drops()?,
            stats_source: self.stats_source,
            command_status: self.command_status,
            stacks: Vec::new(),
        };
        if !last {
            self.view.refresh(&snap);
        }
        Ok(snap)
    }
}

fn fill_comm(agg: &mut Aggregator, pid: u32) {
    let p = agg.get_mut(pid);
    if p.comm.is_empty()
        && let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm"))
    {
        p.comm = c.trim_end().to_owned();
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
