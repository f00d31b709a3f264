//! The live view on a terminal (ratatui, crossterm backend): the per-process table, sortable
//! and selectable; for the selected process its regions, a chart of reserved vs resident vs
//! VmRSS over time and its first-touch rates by kind; the global line, drops, and the keys.
//!
//! [`state`] holds what is shown (tested as plain data), [`draw`] lays it out (tested on
//! ratatui's `TestBackend`), [`guard`] owns the terminal and gives it back on drop and on
//! panic. The view runs on a thread of its own, so keys and resizes are answered at once
//! while the session's thread drains the ring; the session hands it snapshots over a
//! channel. It takes the screen at the first snapshot, after the tracer's "Attached ..."
//! line, and gives it back before the summary is printed on the main screen.
//!
//! `q` ends the session as Ctrl-C does, by raising SIGINT, which the session handles: the
//! same final drain, finished exports and summary. The traced command's stdout and stderr
//! never reach the screen: the CLI sends them to a file (see [`output_file`]).

mod draw;
mod guard;
mod state;

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, IsTerminal as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender, TryRecvError},
    thread::JoinHandle,
    time::Duration,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::event::{self, Event, KeyEventKind},
    widgets::TableState,
};

use self::{
    guard::TerminalGuard,
    state::{Action, State},
};
use super::terminal;
use crate::tracer::{Snapshot, View, decode::TraceEvent};

/// How long the view waits for a key before it looks for a new snapshot.
const POLL: Duration = Duration::from_millis(50);

/// Whether the live view is the one to show: stdout is a terminal, and neither fault lines
/// (`--events`) nor only the summary (`--quiet`) were asked for.
pub fn wanted(print_faults: bool, quiet: bool) -> bool {
    !print_faults && !quiet && io::stdout().is_terminal()
}

/// A new file for the traced command's output while the view owns the terminal:
/// `$TMPDIR/tamalloc-trace-PID[-N].out`, created here (never an existing file or link),
/// readable by its owner only.
pub fn output_file() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir();
    let pid = std::process::id();
    let mut last = None;
    for n in 0..100 {
        let name = match n {
            0 => format!("tamalloc-trace-{pid}.out"),
            n => format!("tamalloc-trace-{pid}-{n}.out"),
        };
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free name")))
}

enum Msg {
    Snapshot(Box<Snapshot>),
    Finish,
}

/// The live view: the session's side of the view's thread.
pub struct Tui {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Tui {
    /// Starts the view's thread; `command_output` is named in the header.
    pub fn start(command_output: Option<&Path>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let state = State::new(command_output.map(|p| p.display().to_string()));
        let thread = std::thread::Builder::new()
            .name("tamalloc-tui".into())
            .spawn(move || run(&rx, state))?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// Ends the view's thread, which gives the terminal back.
    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Msg::Finish);
            // A panic was printed by the hook, after the terminal was restored.
            if let Ok(Err(e)) = thread.join() {
                eprintln!("tamalloc: the live view stopped: {e}");
            }
        }
    }
}

impl View for Tui {
    fn event(&mut self, _ev: &TraceEvent) {}

    fn refresh(&mut self, snap: &Snapshot) {
        // Fails only once the view's thread has ended (its error is reported at the end).
        let _ = self.tx.send(Msg::Snapshot(Box::new(snap.clone())));
    }

    fn finish(&mut self, snap: &Snapshot) {
        self.stop();
        terminal::print_summary(&mut io::stdout().lock(), snap);
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The view's thread: waits for the first snapshot, takes the terminal, then redraws on
/// every snapshot, key and resize until the session finishes.
fn run(rx: &Receiver<Msg>, mut state: State) -> io::Result<()> {
    // Until the first refresh the screen is the shell's (the "Attached" line shows).
    match rx.recv() {
        Ok(Msg::Snapshot(snap)) => state.push(*snap),
        Ok(Msg::Finish) | Err(_) => return Ok(()),
    }
    let _guard = TerminalGuard::enter()?;
    let out = BufWriter::with_capacity(1 << 16, io::stdout());
    let mut term = Terminal::new(CrosstermBackend::new(out))?;
    term.clear()?;
    let mut table = TableState::default();
    let mut dirty = true;
    loop {
        if dirty {
            term.draw(|f| draw::draw(f, &state, &mut table))?;
            dirty = false;
        }
        if event::poll(POLL)? {
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => match state.key(key) {
                    Action::Quit => {
                        interrupt();
                        dirty = true;
                    }
                    Action::Redraw => dirty = true,
                    Action::None => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Snapshot(snap)) => {
                    state.push(*snap);
                    dirty = true;
                }
                Ok(Msg::Finish) | Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => break,
            }
        }
    }
}

/// Ends the session as Ctrl-C would: the session's SIGINT handler runs the usual shutdown.
fn interrupt() {
    // SAFETY: kill(2) on our own pid with a signal the session has a handler for.
    unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn output_files_are_new_and_private() {
        let a = output_file().expect("a file");
        let b = output_file().expect("another");
        let modes: Vec<u32> = [&a, &b]
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777))
            .collect();
        let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
        assert_ne!(a, b);
        assert_eq!(modes, [0o600, 0o600]);
    }

    #[test]
    fn a_view_that_never_had_a_snapshot_ends_without_touching_the_terminal() {
        let mut tui = Tui::start(None).expect("the view's thread");
        tui.stop();
        assert!(tui.thread.is_none());
    }
}
