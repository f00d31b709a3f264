//! The live view in a real terminal: tmux runs `tamalloc trace -- sh demos.sh` (two demos of
//! known sizes) in a detached 160x45 window; `capture-pane` reads the screen and
//! `send-keys` types. It checks the table, the keys line and the selected process's
//! regions; that the demos' own output never reaches the view (it goes to a file named at
//! the end); sort, select and pause; a resize to 100x30; and that Ctrl-C ends the trace with
//! its summary and gives the shell its terminal back (cooked mode, main screen).
//!
//! Needs root (the tracer loads eBPF) and tmux (`cargo xtask setup` installs it): without
//! either it fails, it never skips.

mod common;

use std::{
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use common::{TempDir, bin, require_root};

/// A tmux server of the test's own (its own socket in the test's directory), with one
/// window running `sh`; killed when the test ends, however it ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &TempDir, width: u16, height: u16) -> Self {
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "tmux is missing: this test runs the live view in tmux (`cargo xtask setup` \
             installs it, or apt-get install tmux)"
        );
        let t = Self {
            socket: dir.arg("tmux.sock"),
        };
        let (w, h) = (width.to_string(), height.to_string());
        t.run(&["new-session", "-d", "-s", "tui", "-x", &w, "-y", &h, "sh"]);
        // The whole window is the pane: no status line.
        t.run(&["set-option", "-t", "tui", "status", "off"]);
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        // UTF-8 whatever the locale, so box drawing and braille come back as they are.
        c.args(["-u", "-S", &self.socket]).env("LANG", "C.UTF-8");
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui"])
    }

    /// The main screen with what scrolled off it.
    fn scrollback(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tui", "-S", "-500"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend(keys);
        self.run(&args);
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "tui", "-l", line]);
        self.keys(&["Enter"]);
    }

    /// Whether the pane shows the alternate screen (the view's).
    fn alternate_on(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "tui", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// The screen once `ok` holds for it; fails with the screen after `timeout`.
    fn wait(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{s}"
            );
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The pids of the process table's rows (`│> PID COMM ...` or `│  PID COMM ...`) whose
/// command is `comm`, with the row's text.
fn rows<'a>(screen: &'a str, comm: &str) -> Vec<(u32, &'a str)> {
    screen
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l
                .trim_start_matches(['│', '>', ' '])
                .split_whitespace()
                .collect();
            match (t.first().and_then(|p| p.parse().ok()), t.get(1)) {
                (Some(pid), Some(c)) if *c == comm => Some((pid, l)),
                _ => None,
            }
        })
        .collect()
}

/// The selected row's pid (the row marked `>`).
fn selected(screen: &str) -> Option<u32> {
    rows(screen, "tamalloc")
        .into_iter()
        .find(|(_, l)| l.starts_with("│> "))
        .map(|(pid, _)| pid)
}

/// The pid of the row that shows `count` write_zero faults.
fn pid_with(screen: &str, count: &str) -> Option<u32> {
    rows(screen, "tamalloc")
        .into_iter()
        .find(|(_, l)| l.split_whitespace().any(|w| w == count))
        .map(|(pid, _)| pid)
}

/// Keeps a screen as an artifact (what the README shows), in cargo's temporary directory.
fn keep(screen: &str, name: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, screen).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// What `echo trace-exit=$?` printed.
fn exit_status(screen: &str) -> Option<&str> {
    screen.lines().find_map(|l| {
        let code = l.trim_end().strip_prefix("trace-exit=")?;
        code.bytes()
            .all(|b| b.is_ascii_digit())
            .then_some(code)
            .filter(|c| !c.is_empty())
    })
}

fn header(screen: &str) -> &str {
    screen.lines().next().unwrap_or_default()
}

#[test]
fn the_live_view_in_tmux_sorts_selects_pauses_resizes_and_gives_the_terminal_back() {
    require_root();
    let dir = TempDir::new("tui");
    let tmux = Tmux::start(&dir, 160, 45);
    let b = bin();
    // Two demos: 16 MiB and 8 MiB, every page written once (4096 and 2048 write_zero
    // faults), then held. Ctrl-C reaches the script too, which stops them.
    let script = dir.path("demos.sh");
    std::fs::write(
        &script,
        format!(
            "trap 'kill $a $b' INT TERM\n\
             {b} demo --size 16MiB --rate 8MiB/s --hold 60s & a=$!\n\
             {b} demo --size 8MiB --rate 8MiB/s --hold 60s & b=$!\n\
             wait\n"
        ),
    )
    .expect("write the demos' script");
    tmux.type_line(&format!(
        "TMPDIR={} {b} trace --interval 500ms -- sh {}; echo trace-exit=$?",
        dir.dir().display(),
        script.display()
    ));
    let s = tmux.wait("both demos in the table", Duration::from_secs(60), |s| {
        s.contains(" processes (2)")
            && pid_with(s, "4096").is_some()
            && pid_with(s, "2048").is_some()
    });
    assert!(tmux.alternate_on(), "the view is on the alternate screen");
    let (big, small) = (pid_with(&s, "4096"), pid_with(&s, "2048"));
    let (Some(big), Some(small)) = (big, small) else {
        unreachable!("waited for both")
    };
    assert!(header(&s).starts_with("tamalloc trace"), "{s}");
    assert!(header(&s).contains("command output: "), "{s}");
    for column in [
        "PID",
        "COMM",
        "RESERVED",
        "READ_ZERO",
        "WRITE_ZERO",
        "VmRSS",
    ] {
        assert!(s.contains(column), "column {column} missing:\n{s}");
    }
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 45, "{s}");
    assert!(
        lines[44].starts_with(" q quit  s sort  r reverse  p pause  Up/Down select  Ctrl-C stop"),
        "the keys line:\n{s}"
    );
    // The selected process's regions: its one region, every page written.
    let sel = selected(&s).expect("a selected row");
    assert!(
        s.contains(&format!(" pid {sel} tamalloc: regions 1 (1 live) ")),
        "regions of {sel}:\n{s}"
    );
    assert!(
        s.lines().any(|l| l.contains("100.0%")
            && l.contains("live")
            && (l.contains("fallback") || l.contains("tamalloc"))),
        "the region's row:\n{s}"
    );
    assert!(
        s.contains("first touches/s by kind") && s.contains("MiB: reserved"),
        "{s}"
    );
    // The demos' own lines are not on screen.
    for theirs in ["demo: pid", "(holding)", "/4096 pages", "/2048 pages"] {
        assert!(
            !s.contains(theirs),
            "the command's output `{theirs}` is in the view:\n{s}"
        );
    }

    // Sort by reserved size (the 16 MiB demo first), go to the top, then one down.
    tmux.keys(&["s"]);
    tmux.wait("the reserved order", Duration::from_secs(15), |s| {
        s.contains(" processes (2), sort: RESERVED ")
            && rows(s, "tamalloc").first().map(|r| r.0) == Some(big)
    });
    tmux.keys(&["Home"]);
    tmux.wait("the 16 MiB demo selected", Duration::from_secs(15), |s| {
        selected(s) == Some(big) && s.contains(&format!(" pid {big} tamalloc: regions"))
    });
    tmux.keys(&["Down"]);
    tmux.wait("the 8 MiB demo selected", Duration::from_secs(15), |s| {
        selected(s) == Some(small) && s.contains(&format!(" pid {small} tamalloc: regions"))
    });

    // Pause: the clock on screen stops; resume: it goes on.
    tmux.keys(&["p"]);
    let paused = tmux.wait("PAUSED", Duration::from_secs(15), |s| {
        header(s).contains(" PAUSED ") && s.contains(" p resume ")
    });
    sleep(Duration::from_millis(1500));
    let still = tmux.screen();
    assert_eq!(header(&still), header(&paused), "the paused view moved");
    tmux.keys(&["p"]);
    let s = tmux.wait("resumed", Duration::from_secs(15), |s| {
        !header(s).contains("PAUSED") && header(s) != header(&paused)
    });
    keep(&s, "tui-160x45.txt");

    // A smaller window: redrawn to fit, keys still on the last line.
    tmux.run(&["resize-window", "-t", "tui", "-x", "100", "-y", "30"]);
    let s = tmux.wait("the view redrawn at 100x30", Duration::from_secs(10), |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 30
            && lines[29].starts_with(" q quit  s sort")
            && s.contains(" processes (2), sort: RESERVED ")
    });
    assert!(
        s.lines().all(|l| l.chars().count() <= 100),
        "a line wider than the window:\n{s}"
    );
    assert!(s.contains("WRITE_ZERO") && s.contains(&format!(" pid {small} tamalloc: regions")));
    keep(&s, "tui-100x30.txt");

    // Ctrl-C: the trace ends as always, the summary is printed on the shell's screen.
    tmux.keys(&["C-c"]);
    // (The typed line reads `trace-exit=$?`; the shell's answer has a number.)
    tmux.wait("the trace's end", Duration::from_secs(30), |s| {
        exit_status(s).is_some()
    });
    let s = tmux.scrollback();
    assert!(
        !tmux.alternate_on(),
        "the alternate screen is still on:\n{s}"
    );
    assert!(
        matches!(exit_status(&s), Some("0" | "130")),
        "Ctrl-C ends the trace (0) or the command first (130):\n{s}"
    );
    assert!(s.contains("Summary after"), "no summary:\n{s}");
    assert!(s.contains("Regions (from streamed faults"), "{s}");
    assert!(s.contains("the command's output is in "), "{s}");
    // The shell's terminal is cooked again: line editing, echo and signals. (The marker is
    // quoted so the typed line itself never ends with it.)
    tmux.type_line(
        "stty -a | tr ' ;' '\\n\\n' | grep -xE -e '-?(isig|icanon|echo)' | tr '\\n' ' '; echo '<'stty'>'",
    );
    let answer = |s: &str| -> Option<String> {
        s.lines()
            .map(str::trim_end)
            .find(|l| l.ends_with("<stty>"))
            .map(str::to_owned)
    };
    let s = tmux.wait("stty's answer", Duration::from_secs(10), |s| {
        answer(s).is_some()
    });
    assert_eq!(
        answer(&s).as_deref(),
        Some("isig icanon echo <stty>"),
        "{s}"
    );

    // The demos wrote to the file named at the end, not to the screen.
    let outputs: Vec<_> = std::fs::read_dir(dir.dir())
        .expect("the test's directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("tamalloc-trace-"))
        })
        .collect();
    assert_eq!(outputs.len(), 1, "one command output file: {outputs:?}");
    let text = std::fs::read_to_string(&outputs[0]).expect("the command's output");
    assert_eq!(text.matches("demo: pid").count(), 2, "{text}");
    assert!(
        text.contains("/4096 pages") && text.contains("/2048 pages"),
        "{text}"
    );
    // Ctrl-C reached the script, which stopped the demos.
    for pid in [big, small] {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("demo") {
            // SAFETY: kill(2) on a demo this test started, that outlived the trace.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("demo {pid} outlived the trace");
        }
    }
}

/// Without a terminal the view is the plain one, and `--command-output FILE` still takes
/// the command's stdout and stderr, named on stderr at the end. Needs root (eBPF).
#[test]
fn command_output_goes_to_the_file_named_at_the_end() {
    require_root();
    let dir = TempDir::new("tui-output");
    let file = dir.arg("cmd.out");
    let out = Command::new(bin())
        .args(["trace", "--command-output", &file, "--"])
        .args(["sh", "-c", "echo to-stdout; echo to-stderr >&2"])
        .output()
        .expect("run tamalloc trace");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stdout.contains("to-std") && !stderr.contains("to-std"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("Summary after"), "{stdout}");
    assert!(
        stderr.contains(&format!("tamalloc: the command's output is in {file}")),
        "{stderr}"
    );
    let text = std::fs::read_to_string(&file).expect("the command's output");
    assert_eq!(text, "to-stdout\nto-stderr\n");
}

/// `q` ends the trace as Ctrl-C does: exit 0 (the trace ended first, the demo is stopped),
/// the summary, the terminal back. Needs root (eBPF) and tmux.
#[test]
fn q_in_the_live_view_ends_the_trace_like_ctrl_c() {
    require_root();
    let dir = TempDir::new("tui-q");
    let tmux = Tmux::start(&dir, 120, 40);
    let b = bin();
    tmux.type_line(&format!(
        "TMPDIR={} {b} trace --interval 500ms -- {b} demo --size 4MiB --rate 0 --hold 60s; echo trace-exit=$?",
        dir.dir().display()
    ));
    tmux.wait("the demo's 1024 pages", Duration::from_secs(60), |s| {
        pid_with(s, "1024").is_some() && s.contains(" q quit ")
    });
    let demo = pid_with(&tmux.screen(), "1024");
    tmux.keys(&["q"]);
    let s = tmux.wait("the trace's end", Duration::from_secs(30), |s| {
        exit_status(s).is_some()
    });
    assert!(!tmux.alternate_on(), "{s}");
    let s = tmux.scrollback();
    assert_eq!(exit_status(&s), Some("0"), "{s}");
    assert!(s.contains("Summary after"), "{s}");
    // The demo was stopped with the trace.
    sleep(Duration::from_millis(500));
    if let Some(pid) = demo {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("demo"),
            "demo {pid} outlived the trace"
        );
    }
}
