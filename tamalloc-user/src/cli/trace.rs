//! `tamalloc trace`: the live first-touch fault tracer.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use tamalloc::{
    output::{
        self, Format, Tee, TeeSink, prometheus,
        stacks::{StackFiles, StackSet, StackTargets},
        terminal, tui,
    },
    tracer::{
        ModeChoice, ProbeOptions, Regions, Sink, View,
        command::{self, CommandStdio},
        session::{self, TraceOptions},
    },
};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    sudo tamalloc trace -- tamalloc demo --size 64MiB --rate 16MiB/s\n  \
    sudo tamalloc trace -p 1234 --interval 2s\n  \
    sudo tamalloc trace --events --output trace.jsonl -- ./my-program\n  \
    sudo tamalloc trace --output trace.pftrace --format perfetto -- ./my-program\n  \
    sudo tamalloc trace --output trace.jsonl --record trace.tamrec -- ./my-program\n  \
    sudo tamalloc trace --prometheus 127.0.0.1:9464 -p 1234\n  \
    sudo tamalloc trace --regions anon -o run.jsonl -- python3 app.py\n  \
    sudo tamalloc trace --stacks --flamegraph pages.svg --pprof pages.pb.gz -- ./my-program")]
pub struct Args {
    #[command(flatten)]
    follow: Follow,
    /// Print every fault as it happens, one line each: seconds (CLOCK_MONOTONIC), pid, tid,
    /// kind, `region` ADDR, `page` N, `addr` ADDR.
    #[arg(short, long)]
    events: bool,
    /// Write the trace to FILE (faults are streamed, not only counted).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Format of --output: jsonl, perfetto (Perfetto's native protobuf trace, for
    /// ui.perfetto.dev), chrome-json (Chrome JSON trace events), csv, or record (a binary
    /// recording, as `tamalloc record` writes).
    #[arg(short, long, value_enum, default_value_t, requires = "output")]
    format: Format,
    /// Also keep a recording of the session in FILE, beside --output in any format (convert
    /// it later with `tamalloc report FILE --format ...`).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics while tracing (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<SocketAddr>,
    /// What one Prometheus series stands for: `comm` (the default; few series), `cgroup`, or
    /// `pid` (one series per process: many, for a fleet).
    #[arg(
        long,
        value_enum,
        default_value_t,
        value_name = "GROUP",
        requires = "prometheus"
    )]
    prometheus_by: prometheus::GroupBy,
    /// Print only the summary at the end, no live view.
    #[arg(short, long)]
    quiet: bool,
    /// With --stacks: write the first-touch stacks as folded stacks to FILE at the end (one
    /// `comm;outer;...;leaf;[kind] PAGES` line per call path and kind, for flamegraph.pl,
    /// inferno or speedscope).
    #[arg(long, value_name = "FILE", requires = "stacks")]
    folded: Option<PathBuf>,
    /// With --stacks: draw the first-touch stacks as a flame graph SVG in FILE at the end
    /// (widths are pages first touched; the top frame is the kind).
    #[arg(long, value_name = "FILE", requires = "stacks")]
    flamegraph: Option<PathBuf>,
    /// With --stacks: write the first-touch stacks as a gzipped pprof profile to FILE at the
    /// end (`go tool pprof`, Pyroscope, Parca): pages and bytes per kind, labelled by pid,
    /// comm and region.
    #[arg(long, value_name = "FILE", requires = "stacks")]
    pprof: Option<PathBuf>,
    /// Send the traced command's stdout and stderr to FILE (named again when the trace ends).
    /// With the live view (stdout a terminal) they always go to a file: without this flag a
    /// new one in $TMPDIR.
    #[arg(long, value_name = "FILE")]
    command_output: Option<PathBuf>,
}

/// What to follow, for how long and how: the flags `trace` and `record` share.
#[derive(clap::Args)]
pub struct Follow {
    /// Follow this process and the processes it forks (repeatable).
    #[arg(short, long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pids: Vec<u32>,
    /// Follow processes with this command name (as /proc/PID/comm shows it, at most 15 bytes).
    #[arg(long, value_parser = parse_comm)]
    comm: Option<String>,
    /// Stop after this long (e.g. 500ms, 10s, 2m).
    #[arg(short, long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Refresh the view and sample memory stats this often.
    #[arg(short, long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Ring buffer for streamed events, in bytes (a power of two of at least 4KiB).
    #[arg(long, default_value = "4MiB", value_parser = parse_ring_size)]
    ring_size: u32,
    /// Processes with regions the tracer counts at once; an exited process's room is reused.
    /// Beyond it, new processes are not counted and the summary reports `map_full` drops.
    #[arg(long, default_value_t = tamalloc_common::maps::MAX_PROCS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    max_procs: u32,
    /// How faults are counted: `kernel` (what the kernel installed, through fexit; needs
    /// BTF), `tracepoint` (the page-fault tracepoints and the tracer's own page state), or
    /// `auto`: kernel where the kernel allows it ($TAMALLOC_TRACE_MODE decides `auto`).
    #[arg(long, default_value = "auto", value_name = "MODE", value_parser = parse_mode)]
    mode: ModeChoice,
    /// Which mappings are followed: `tamalloc` (syscall 554's regions), `anon` (those and
    /// every private anonymous mapping made from then on: `mmap(MAP_PRIVATE|MAP_ANONYMOUS)`
    /// and the heap, so an unmodified program's malloc, calloc and mmap memory counts too),
    /// or `name:NAME` (those and ranges named [anon:NAME] with prctl(PR_SET_VMA_ANON_NAME)).
    #[arg(long, default_value = "tamalloc", value_name = "WHICH", value_parser = parse_regions)]
    regions: Regions,
    /// Take the stack of every first touch (and the kernel's, when the kernel made the
    /// touch), counted in the kernel by process, region, kind and stack; the trace ends
    /// with them symbolized (`stack` records; --flamegraph, --folded, --pprof). User
    /// stacks are walked by frame pointers: build with -fno-omit-frame-pointer (C) or
    /// -C force-frame-pointers=yes (Rust) for whole stacks.
    #[arg(long)]
    stacks: bool,
    /// Command to run and follow, with its descendants; the trace ends when it exits, and
    /// exits with its status (128+N if signal N killed it; 127 or 126 if it cannot be run).
    /// A trace that ends first (--duration, Ctrl-C) kills it and exits 0.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

impl Follow {
    /// Checks what can be checked before anything is loaded or created: a command that
    /// cannot run costs no attach, and main exits 127 (not found) or 126 (not executable)
    /// as shells do.
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(program) = self.command.first() {
            command::check(program)?;
        }
        for pid in &self.pids {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("process {pid} not found");
            }
        }
        Ok(())
    }

    /// The session's options; `stream` asks for every fault, not only counts.
    pub fn options(&self, stream: bool) -> TraceOptions {
        TraceOptions {
            probe: ProbeOptions {
                stream_faults: stream,
                ring_bytes: self.ring_size,
                pids: self.pids.clone(),
                comm: self.comm.clone(),
                filter_pids: !self.command.is_empty(),
                max_procs: self.max_procs,
                mode: self.mode,
                regions: self.regions.clone(),
                stacks: self.stacks,
            },
            command: self.command.clone(),
            command_stdio: CommandStdio::default(),
            duration: self.duration,
            interval: self.interval,
        }
    }
}

/// The current-thread runtime a session runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The status to exit with after a session: CMD's when CMD's end ended it, else success.
pub fn exit_status(outcome: &session::Outcome) -> ExitCode {
    outcome
        .command
        .map_or(ExitCode::SUCCESS, |s| ExitCode::from(command::exit_code(s)))
}

/// Opens `path` for the trace in `format`.
pub fn open_output(path: &std::path::Path, format: Format) -> anyhow::Result<Box<dyn Sink + Send>> {
    output::open_live(path, format)
        .with_context(|| format!("cannot write the trace to {}", path.display()))
}

/// Traces, and returns the status to exit with: CMD's with `-- CMD` when CMD's end ended
/// the trace (128 + N when signal N killed it), as `strace`, `perf stat` and `time` do;
/// else success.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    args.follow.check()?;
    let live = tui::wanted(args.events, args.quiet);
    // The live view shows each process's regions with their first touches: faults stream.
    let stream = args.events || args.output.is_some() || args.record.is_some() || live;
    let mut opts = args.follow.options(stream);
    // The view owns the terminal: the command's output must not write into it.
    let command_output = match &args.command_output {
        _ if opts.command.is_empty() => None,
        Some(path) => Some(path.clone()),
        None if live => {
            Some(tui::output_file().context("cannot create a file for the command's output")?)
        }
        None => None,
    };
    opts.command_stdio = CommandStdio {
        output: command_output.clone(),
        null_stdin: live,
    };
    let mut sinks = Vec::new();
    if let Some(path) = &args.output {
        sinks.push(open_output(path, args.format)?);
    }
    if let Some(path) = &args.record {
        sinks.push(open_output(path, Format::Record)?);
    }
    let stack_files = StackTargets {
        folded: args.folded.clone(),
        flamegraph: args.flamegraph.clone(),
        pprof: args.pprof.clone(),
    };
    if !stack_files.is_empty() {
        // Kept in memory and written at the end: no thread of its own needed.
        sinks.push(Box::new(StackFiles::create(
            &stack_files,
            StackSet::default(),
        )?));
    }
    let sink: Option<Box<dyn Sink + Send>> = match sinks.len() {
        0 => None,
        1 => sinks.pop(),
        _ => Some(Box::new(TeeSink::new(sinks))),
    };
    let runtime = runtime()?;
    // Bound before tracing starts, so a busy port is one clear error and nothing else.
    let listener = match args.prometheus {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .with_context(|| format!("cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let mut view: Box<dyn View> = if live {
        Box::new(tui::Tui::start(command_output.as_deref()).context("starting the live view")?)
    } else {
        terminal::plain(args.events, args.quiet)
    };
    if let Some(listener) = listener {
        let (metrics, registry) = prometheus::metrics(args.prometheus_by);
        let _entered = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("serving the Prometheus endpoint")?;
        // Runs on the current-thread runtime whenever `block_on` below waits.
        runtime.spawn(prometheus::serve(listener, registry));
        view = Box::new(Tee::new(vec![view, Box::new(metrics) as Box<dyn View>]));
    }
    let outcome = runtime.block_on(session::run(opts, sink, view));
    if let Some(path) = &command_output {
        let empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
        if empty && args.command_output.is_none() {
            // Ours, and nothing was written (the command printed nothing, or never ran).
            let _ = std::fs::remove_file(path);
        } else {
            eprintln!("tamalloc: the command's output is in {}", path.display());
        }
    }
    Ok(exit_status(&outcome.context("tracing failed")?))
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        return Err("a command name has 1 to 15 bytes (the kernel keeps 15)".into());
    }
    Ok(s.to_owned())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tamalloc::size::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("the interval must be at least 10ms".into());
    }
    Ok(d)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let bytes = tamalloc::size::parse_size(s).map_err(|e| e.to_string())?;
    match u32::try_from(bytes) {
        Ok(b) if b >= 4096 && b.is_power_of_two() => Ok(b),
        _ => Err(format!(
            "{s} is not a power of two between 4KiB and 2GiB (e.g. 4KiB, 1MiB, 4MiB)"
        )),
    }
}

fn parse_mode(s: &str) -> Result<ModeChoice, String> {
    s.parse()
}

fn parse_regions(s: &str) -> Result<Regions, String> {
    s.parse()
}
