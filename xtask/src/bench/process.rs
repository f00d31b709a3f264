//! Child processes of the benchmark (killed and reaped on drop) and what is read about
//! them from /proc while they run.

use std::{
    fs,
    path::Path,
    process::{Child, ChildStdout, Command, ExitStatus},
    sync::mpsc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use super::data::Footprint;

/// A child process, killed and reaped on drop unless it was reaped already.
pub struct Spawned {
    child: Child,
    reaped: bool,
}

impl Spawned {
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {cmd:?}"))?;
        Ok(Self {
            child,
            reaped: false,
        })
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    /// Its stdout, when it was spawned with `Stdio::piped()` (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for the end, failing unless it exits 0.
    pub fn wait_ok(&mut self, what: &str) -> anyhow::Result<()> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {what}"))?;
        self.reaped = true;
        if !status.success() {
            bail!("{what} failed: {status}");
        }
        Ok(())
    }

    /// Its status if it has ended (reaping it), else `None`.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// Sends `signal` unless it has been reaped.
    pub fn signal(&self, signal: i32) {
        if !self.reaped {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child, so
            // it cannot have been recycled.
            unsafe { libc::kill(self.pid(), signal) };
        }
    }

    /// SIGINT, then waits up to `grace` before killing.
    pub fn interrupt(&mut self, grace: Duration) {
        if self.reaped {
            return;
        }
        self.signal(libc::SIGINT);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's peak RSS and CPU time so far, from /proc; `None` once it is gone.
fn sample_footprint(pid: i32) -> Option<Footprint> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Footprint {
        hwm_kib,
        cpu_s: (utime + stime) / hz,
    })
}

/// Polls a process's footprint until it is gone; the last sample is the answer.
pub fn watch_footprint(pid: i32) -> mpsc::Receiver<Footprint> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut last = None;
        while let Some(f) = sample_footprint(pid) {
            last = Some(f);
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(f) = last {
            let _ = tx.send(f);
        }
    });
    rx
}

/// Now, in nanoseconds since the epoch (the workloads report their start the same way).
pub fn unix_ns() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_nanos() as f64)
}

/// The last `bytes` of a file, as text.
pub fn tail(path: &Path, bytes: u64) -> anyhow::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    f.seek(SeekFrom::Start(len.saturating_sub(bytes)))
        .context("seeking")?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).context("reading")?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
