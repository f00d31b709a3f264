//! The command `tamalloc trace -- CMD` follows: checked before anything is loaded, started
//! held at a gate until the probe follows its pid, and the exit status the trace returns.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, process::ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::ExitStatus,
};

use tokio::process::{Child, Command};

use super::{Probe, TraceError};

/// The command cannot be run: not found (exit status 127, as shells use) or found but not
/// executable (126).
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{program}`: {}", reason(*.errno))]
pub struct CommandError {
    pub program: String,
    errno: i32,
}

impl CommandError {
    fn new(program: &str, errno: i32) -> Self {
        Self {
            program: program.to_owned(),
            errno,
        }
    }

    /// The exit status a shell gives for it: 127 when not found, else 126.
    pub fn exit_code(&self) -> u8 {
        if self.errno == libc::ENOENT { 127 } else { 126 }
    }
}

/// `strerror`, without std's ` (os error N)` suffix.
fn reason(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.strip_suffix(&format!(" (os error {errno})")) {
        Some(t) => t.to_owned(),
        None => text,
    }
}

/// The exit status of `tamalloc trace -- CMD` for CMD's `status`: its code, or 128 + the
/// signal that killed it (as shells, `time` and `perf stat` report it).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}

/// Fails when `program` cannot be run, searching `$PATH` as `execvp` does: before anything
/// is loaded, so a typo costs no attach and gives one clear line.
pub fn check(program: &str) -> Result<(), CommandError> {
    search(program)
        .map(drop)
        .map_err(|e| CommandError::new(program, e))
}

/// The file `execvp` would run for `program`.
pub fn resolve(program: &str) -> Option<PathBuf> {
    search(program).ok()
}

fn search(program: &str) -> Result<PathBuf, i32> {
    if program.is_empty() {
        return Err(libc::ENOENT);
    }
    if program.contains('/') {
        return executable(Path::new(program)).map(|()| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut denied = false;
    for dir in std::env::split_paths(&path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(libc::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    Err(if denied { libc::EACCES } else { libc::ENOENT })
}

/// Whether `execve` could run `path`, as an errno: a directory is EACCES, as for execve.
fn executable(path: &Path) -> Result<(), i32> {
    let meta = std::fs::metadata(path).map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT))?;
    if meta.is_dir() {
        return Err(libc::EACCES);
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| libc::ENOENT)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EACCES));
    }
    Ok(())
}

/// Where the followed command's standard streams go.
#[derive(Clone, Debug, Default)]
pub struct CommandStdio {
    /// Its stdout and stderr go to this file (created, or truncated) instead of ours.
    pub output: Option<PathBuf>,
    /// Its stdin is /dev/null: a live view reads the terminal.
    pub null_stdin: bool,
}

/// Spawns `program` held at a gate until the probe follows its pid, so not one of its
/// regions is missed; its standard streams as `stdio` says. `std` only returns from spawn
/// once the child has exec'd, so the child is first our own binary (`tamalloc exec-gated
/// FD -- CMD`), which waits on the gate and then execs CMD under the same pid.
pub(super) fn spawn_followed(
    probe: &mut Probe,
    program: &str,
    args: &[String],
    stdio: &CommandStdio,
) -> Result<Child, TraceError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| TraceError::Io { what, source }
    };
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io("creating the start gate pipe")(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 just returned these two fresh descriptors; we own them.
    let (gate_r, gate_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let r = gate_r.as_raw_fd();
    let me = std::env::current_exe().map_err(io("locating the tamalloc binary"))?;
    let mut cmd = Command::new(me);
    cmd.arg("exec-gated")
        .arg(r.to_string())
        .arg("--")
        .arg(program)
        .args(args)
        .kill_on_drop(true);
    if let Some(path) = &stdio.output {
        let what = format!("creating {} for the command's output", path.display());
        let out = std::fs::File::create(path).map_err(io(&what))?;
        cmd.stderr(out.try_clone().map_err(io(&what))?).stdout(out);
    }
    if stdio.null_stdin {
        cmd.stdin(std::process::Stdio::null());
    }
    // SAFETY: fcntl is async-signal-safe; it lets the gate's read end survive the exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(r, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = cmd.spawn().map_err(io(&format!("starting `{program}`")))?;
    drop(gate_r);
    let pid = child
        .id()
        .ok_or_else(|| TraceError::Internal("spawned command has no pid".into()))?;
    probe.follow_from_exec(pid)?;
    // SAFETY: writing one byte from a valid buffer to our own pipe.
    if unsafe { libc::write(gate_w.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
        return Err(io("releasing the followed command")(
            io::Error::last_os_error(),
        ));
    }
    Ok(child)
}

/// The child side of [`spawn_followed`]: wait for the gate on `fd`, then exec `command`.
/// Returns only on failure.
///
/// Everything exec needs is built before the gate opens: once it does, this process is
/// followed, and under `--regions anon` a page it touched (an allocation for exec's
/// arguments) would count against the command. execvp(3) searches PATH on the stack.
pub fn exec_gated(fd: i32, command: &[String]) -> CommandError {
    use std::ffi::CString;
    let Some(program) = command.first() else {
        return CommandError::new("", libc::ENOENT);
    };
    let Ok(args) = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<CString>, _>>()
    else {
        // An argument with a NUL byte cannot be passed to exec.
        return CommandError::new(program, libc::EINVAL);
    };
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into a valid buffer from the inherited gate.
        let n = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    // SAFETY: the gate is ours and no longer needed.
    unsafe { libc::close(fd) };
    // SAFETY: `argv` is a NULL-terminated array of pointers to the NUL-terminated `args`,
    // which outlive the call; execvp returns only on failure.
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    CommandError::new(
        program,
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_that_cannot_run_fail_as_shells_do() {
        let e = check("/nonexistent").expect_err("missing");
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("cannot run `/nonexistent`: No such file or directory", 127)
        );
        let e = check("tamalloc-no-such-command").expect_err("not on PATH");
        assert_eq!(e.exit_code(), 127);
        let e = check("/").expect_err("a directory");
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("cannot run `/`: Permission denied", 126)
        );
        let file = std::env::temp_dir().join(format!("tamalloc-not-exec-{}", std::process::id()));
        std::fs::write(&file, "#!/bin/sh\n").expect("write a file without x bits");
        let e = check(file.to_str().expect("utf-8")).expect_err("not executable");
        let _ = std::fs::remove_file(&file);
        assert_eq!(e.exit_code(), 126);
        check("sh").expect("sh is on PATH");
        check("/bin/sh").expect("by path");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        // Killed by SIGTERM (15).
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
