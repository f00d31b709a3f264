//! ia32 syscalls (`int 0x80`) of 64-bit processes: the programs tell them from x86-64 ones
//! by `TS_COMPAT` in the current task's `thread_info.status`, at the offset found here.

/// Offset of `thread_info.status` in `task_struct` on x86-64 kernels of `release`
/// (`/proc/sys/kernel/osrelease`), 0 when unknown (the programs then read every syscall
/// as an x86-64 one). `thread_info` opens `task_struct` (THREAD_INFO_IN_TASK, 4.9+); its
/// `flags` are followed by `syscall_work` since 5.11, then `status`.
pub(super) fn thread_status_offset(release: &str) -> u32 {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) >= (5, 11) => 16,
        (Some(major), Some(minor)) if (major, minor) >= (4, 9) => 8,
        _ => 0,
    }
}

/// The running kernel's [`thread_status_offset`].
pub(super) fn running_thread_status_offset() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| thread_status_offset(r.trim()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_the_kernel_release() {
        assert_eq!(thread_status_offset("6.18.0-rc1"), 16);
        assert_eq!(thread_status_offset("6.1.0-tamalloc"), 16);
        assert_eq!(thread_status_offset("5.11.0"), 16);
        assert_eq!(thread_status_offset("5.10.200"), 8);
        assert_eq!(thread_status_offset("4.4.0"), 0);
        assert_eq!(thread_status_offset(""), 0);
    }

    /// The rule agrees with the running kernel's BTF, where it has one.
    #[test]
    fn offset_matches_this_kernels_btf() {
        let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: only the release rule is tested");
            return;
        };
        let btf = super::super::btf::KernelBtf::parse(&raw).expect("kernel BTF parses");
        let status = btf
            .field_offset("thread_info", "status")
            .expect("thread_info.status");
        let in_task = btf
            .field_offset("task_struct", "thread_info")
            .expect("task_struct.thread_info");
        assert_eq!(running_thread_status_offset(), in_task + status);
    }
}
