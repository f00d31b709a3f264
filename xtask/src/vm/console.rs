//! Following the guest's console: split into lines, copied to the log (and stdout), and
//! watched for `/init`'s report lines, kernel panics, the deadline and our interrupt flag.

use std::{
    fs::File,
    io::{self, Write as _},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::util::interrupted_by;

/// How long QEMU may take to exit after `/init`'s last line before we stop it.
const DONE_GRACE: Duration = Duration::from_secs(5);

/// Follows the console lines until QEMU closes it, enforcing the limits.
pub struct Watch {
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    panic_at: Option<Instant>,
    done_at: Option<Instant>,
    pub exit: Option<i32>,
    pub warnings: Option<u32>,
    pub lines: Vec<String>,
}

impl Watch {
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            deadline: timeout.map(|t| Instant::now() + t),
            timeout,
            panic_at: None,
            done_at: None,
            exit: None,
            warnings: None,
            lines: Vec::new(),
        }
    }

    pub fn follow(
        &mut self,
        lines: &mpsc::Receiver<String>,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<()> {
        loop {
            if interrupted.load(Ordering::Relaxed) {
                bail!("{}; QEMU stopped", interrupted_by());
            }
            if let Some(at) = self.panic_at {
                // Give the rest of the oops a moment to reach the console.
                if at.elapsed() > Duration::from_secs(2) {
                    bail!("kernel panic; QEMU stopped");
                }
            }
            if self.done_at.is_some_and(|at| at.elapsed() > DONE_GRACE) {
                // `/init` finished but the machine did not go away: stop it ourselves.
                break;
            }
            if self.deadline.is_some_and(|d| Instant::now() > d) {
                let secs = self.timeout.map_or(0, |t| t.as_secs());
                bail!("timed out after {secs} s; QEMU killed (raise --timeout?)");
            }
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.see(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if self.panic_at.is_some() {
            bail!("kernel panic");
        }
        Ok(())
    }

    fn see(&mut self, line: String) {
        match parse_console_line(&line) {
            Some(Event::Exit(n)) => self.exit = Some(n),
            Some(Event::Warnings(n)) => self.warnings = Some(n),
            Some(Event::Panic) => self.panic_at = self.panic_at.or(Some(Instant::now())),
            Some(Event::Done) => self.done_at = self.done_at.or(Some(Instant::now())),
            None => {}
        }
        self.lines.push(line);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Exit(i32),
    Warnings(u32),
    /// `init: success` or `init: failure`: the last report line.
    Done,
    Panic,
}

/// Recognizes `/init`'s report lines and kernel panics.
fn parse_console_line(line: &str) -> Option<Event> {
    if line.contains("Kernel panic - not syncing") {
        return Some(Event::Panic);
    }
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("init: exit=") {
        return rest.parse().ok().map(Event::Exit);
    }
    if let Some(rest) = line.strip_prefix("init: kernel-warnings=") {
        return rest.parse().ok().map(Event::Warnings);
    }
    if line == "init: success" || line == "init: failure" {
        return Some(Event::Done);
    }
    None
}

/// Copies the console to stdout (if `echo`) and `log`, and sends each complete line.
pub fn spawn_console_reader(
    mut from: impl io::Read + Send + 'static,
    mut log: File,
    echo: bool,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            // Console and log are best effort: a closed stdout must not stop the VM.
            let _ = log.write_all(chunk);
            if echo {
                let mut out = io::stdout().lock();
                let _ = out.write_all(chunk);
                let _ = out.flush();
            }
            pending.extend_from_slice(chunk);
            for line in take_lines(&mut pending) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(String::from_utf8_lossy(&pending).into_owned());
        }
    });
    rx
}

/// Removes the complete lines from `pending`, without their `\r\n`.
fn take_lines(pending: &mut Vec<u8>) -> Vec<String> {
    let Some(last) = pending.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let rest = pending.split_off(last + 1);
    let lines = String::from_utf8_lossy(pending)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    *pending = rest;
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_lines_are_parsed() {
        assert_eq!(parse_console_line("init: exit=0"), Some(Event::Exit(0)));
        assert_eq!(parse_console_line("init: exit=7\r"), Some(Event::Exit(7)));
        assert_eq!(
            parse_console_line("init: kernel-warnings=3"),
            Some(Event::Warnings(3))
        );
        assert_eq!(
            parse_console_line("[    1.2] Kernel panic - not syncing: Fatal exception"),
            Some(Event::Panic)
        );
        assert_eq!(parse_console_line("echo init: exit=3"), None);
        assert_eq!(parse_console_line("init: exit=abc"), None);
        assert_eq!(parse_console_line("init: success"), Some(Event::Done));
        assert_eq!(parse_console_line("init: failure\r"), Some(Event::Done));
        assert_eq!(parse_console_line("hello"), None);
    }

    #[test]
    fn console_is_split_into_lines() {
        let mut pending = b"one\r\ntwo\nthr".to_vec();
        assert_eq!(take_lines(&mut pending), ["one", "two"]);
        assert_eq!(pending, b"thr");
        pending.extend_from_slice(b"ee\n");
        assert_eq!(take_lines(&mut pending), ["three"]);
        assert!(pending.is_empty());
        assert!(take_lines(&mut pending).is_empty());
    }

    #[test]
    fn watch_collects_exit_and_warnings() {
        let (tx, rx) = mpsc::channel();
        for line in [
            "boot",
            "init: exit=7",
            "init: kernel-warnings=2",
            "init: failure",
        ] {
            tx.send(line.to_owned()).unwrap();
        }
        drop(tx);
        let mut watch = Watch::new(Some(Duration::from_secs(5)));
        watch.follow(&rx, &AtomicBool::new(false)).unwrap();
        assert_eq!(watch.exit, Some(7));
        assert_eq!(watch.warnings, Some(2));
        assert_eq!(watch.lines.len(), 4);
    }

    #[test]
    fn watch_times_out_and_sees_interrupts() {
        let (_tx, rx) = mpsc::channel::<String>();
        let mut watch = Watch::new(Some(Duration::from_millis(150)));
        let err = watch.follow(&rx, &AtomicBool::new(false)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        let mut watch = Watch::new(None);
        let err = watch.follow(&rx, &AtomicBool::new(true)).unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
    }
}
