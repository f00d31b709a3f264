//! tracefs: where it is, mounting it when missing, and the tracepoints' formats.

use std::{fs, io, path::PathBuf};

use crate::tracer::TraceError;

const TRACEFS: &str = "/sys/kernel/tracing";

/// Where tracefs is: `/sys/kernel/tracing`, or `$TAMALLOC_TRACEFS` (for tests and for
/// systems that mount it elsewhere).
fn root() -> PathBuf {
    std::env::var_os("TAMALLOC_TRACEFS")
        .map(Into::into)
        .unwrap_or_else(|| TRACEFS.into())
}

/// Mounts tracefs when it is missing and we may; otherwise says how.
pub(super) fn ensure_mounted() -> Result<(), TraceError> {
    let root = root();
    let events = root.join("events");
    if events.is_dir() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(&root)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok && events.is_dir() {
            return Ok(());
        }
    }
    Err(TraceError::NoTracefs(root.display().to_string()))
}

/// The format description of `category:name`, or why the kernel does not have it.
pub(super) fn format(category: &str, name: &str) -> Result<String, TraceError> {
    let path = root()
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    fs::read_to_string(&path).map_err(|e| TraceError::Tracepoint {
        name: format!("{category}:{name}"),
        why: if e.kind() == io::ErrorKind::NotFound {
            "this kernel does not have it (needs CONFIG_FTRACE_SYSCALLS, CONFIG_TRACEPOINTS)".into()
        } else {
            format!("{}: {e}", path.display())
        },
    })
}

/// Where `child_pid` is in `sched:sched_process_fork`'s record (it moved in 6.x).
pub(super) fn fork_child_pid_offset() -> Result<u32, TraceError> {
    field_offset(&format("sched", "sched_process_fork")?, "child_pid").ok_or_else(|| {
        TraceError::Tracepoint {
            name: "sched:sched_process_fork".into(),
            why: "its format has no child_pid field".into(),
        }
    })
}

/// Where `group_dead` is in `sched:sched_process_exit`'s record (6.15 and later), or 0.
pub(super) fn exit_group_dead_offset() -> Result<u32, TraceError> {
    Ok(field_offset(&format("sched", "sched_process_exit")?, "group_dead").unwrap_or(0))
}

/// The byte offset of `field` in a tracefs format description.
pub fn field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        if name != field {
            return None;
        }
        parts.next()?.trim().strip_prefix("offset:")?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fork_offsets_on_old_and_new_kernels() {
        let v61 = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
                   \tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\
                   \tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(v61, "child_pid"), Some(44));
        let v618 = "\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
                    \tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(v618, "child_pid"), Some(20));
        assert_eq!(field_offset(v618, "nope"), None);
    }
}
