//! The error type of the library: kernel errors keep their errno.

use std::fmt;

/// Everything the allocator, the statistics readers and the parsers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call (or its documented fallback) failed; `errno` is what the kernel said.
    ///
    /// Displays as `tamalloc(0): Invalid argument (EINVAL)`.
    #[error("{}: {} ({})", OpDisplay(op, *arg), errno_message(*errno), errno_name(*errno))]
    Os {
        /// The call, e.g. `"tamalloc"` or `"get_memory_usage_stats"`.
        op: &'static str,
        /// Its main argument (size or pid), when it has one.
        arg: Option<u64>,
        errno: i32,
    },
    /// The process does not exist (any more): `ESRCH`.
    #[error("process {pid} not found (ESRCH)")]
    NoSuchProcess { pid: u32 },
    /// Reading a `/proc` file failed.
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file did not look as expected.
    #[error("{path}: {reason}")]
    Procfs { path: String, reason: &'static str },
    /// A human size (`10MiB`) could not be parsed.
    #[error("invalid size '{input}': {reason}")]
    Size { input: String, reason: String },
    /// A percentage (`50%`) could not be parsed or is out of range.
    #[error("invalid percentage '{input}': {reason}")]
    Percent { input: String, reason: String },
    /// A rate (`4MiB/s`) could not be parsed.
    #[error("invalid rate '{input}': {reason}")]
    Rate { input: String, reason: String },
    /// A duration (`5s`) could not be parsed.
    #[error("invalid duration '{input}': {reason}")]
    Duration { input: String, reason: String },
}

struct OpDisplay<'a>(&'a str, Option<u64>);

impl fmt::Display for OpDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(arg) => write!(f, "{}({arg})", self.0),
            None => write!(f, "{}()", self.0),
        }
    }
}

impl Error {
    /// The errno this error stands for, when it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Os { errno, .. } => Some(*errno),
            Self::NoSuchProcess { .. } => Some(libc::ESRCH),
            Self::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn os(op: &'static str, arg: Option<u64>, errno: i32) -> Self {
        Self::Os { op, arg, errno }
    }

    pub(crate) fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// The symbolic name of an errno (`"EINVAL"`), or `"errno N"` for rare ones.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

/// The C library's message for an errno, without Rust's `(os error N)` suffix.
pub fn errno_message(errno: i32) -> String {
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    match full.rfind(" (os error ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

/// The calling thread's `errno`.
pub(crate) fn last_errno() -> i32 {
    // SAFETY: `__errno_location` returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno` (for the C API).
pub(crate) fn set_errno(errno: i32) {
    // SAFETY: `__errno_location` returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_message_names_call_and_errno() {
        let e = Error::os("tamalloc", Some(0), libc::EINVAL);
        assert_eq!(e.to_string(), "tamalloc(0): Invalid argument (EINVAL)");
        assert_eq!(e.errno(), Some(libc::EINVAL));
        let e = Error::os("get_global_memory_usage_stats", None, libc::EFAULT);
        assert_eq!(
            e.to_string(),
            "get_global_memory_usage_stats(): Bad address (EFAULT)"
        );
    }

    #[test]
    fn no_such_process_is_esrch() {
        let e = Error::NoSuchProcess { pid: 999_999 };
        assert_eq!(e.to_string(), "process 999999 not found (ESRCH)");
        assert_eq!(e.errno(), Some(libc::ESRCH));
    }

    #[test]
    fn unknown_errno_has_a_number() {
        assert_eq!(errno_name(4095), "errno 4095");
        assert_eq!(errno_name(libc::ENOMEM), "ENOMEM");
    }
}
