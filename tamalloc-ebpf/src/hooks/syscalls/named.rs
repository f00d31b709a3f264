//! `--regions name:NAME`: `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)` names
//! anonymous memory `[anon:name]` (kernels with CONFIG_ANON_VMA_NAME). A range named NAME
//! becomes a region; a followed range named anything else (or unnamed) stops being one, as
//! it stops being a NAME mapping for the kernel too.

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use tamalloc_common::{
    abi::SYS_PRCTL,
    maps::ANON_NAME_MAX,
    trace::{PAGE_SIZE, REGION_NAMED, page_align},
};

use super::{RET_OFFSET, done, learn, read_u64, take_pending, unmap};
use crate::{maps::REGION_NAME, regions};

pub(super) const PR_SET_VMA: u64 = 0x5356_4d41;
pub(super) const PR_SET_VMA_ANON_NAME: u64 = 0;

/// Whether the NUL-terminated name at user address `ptr` is NAME (`REGION_NAME`).
#[inline(always)]
fn is_followed_name(ptr: u64) -> bool {
    let Some(want) = REGION_NAME.get(0) else {
        return false;
    };
    let mut buf = [0u8; ANON_NAME_MAX];
    // SAFETY: bpf_probe_read_user_str copes with any user pointer and stops at the NUL.
    let Ok(got) = (unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut buf) }) else {
        return false;
    };
    let n = got.len();
    // NAME is NUL-padded: equal when the first n bytes match and NAME ends there.
    if n == 0 || n >= ANON_NAME_MAX || want[n] != 0 {
        return false;
    }
    let mut i = 0;
    while i < ANON_NAME_MAX {
        if i < n && buf[i] != want[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[tracepoint]
pub fn exit_prctl(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_PRCTL) else {
        return 0;
    };
    done(pid_tgid, &p);
    if read_u64(&ctx, RET_OFFSET) != 0 {
        return 0;
    }
    let (tgid, tid, addr, name) = (
        (pid_tgid >> 32) as u32,
        pid_tgid as u32,
        p.args[2],
        p.args[4],
    );
    let Some(len) = page_align(p.args[3]) else {
        return 0;
    };
    if len == 0 || addr & (PAGE_SIZE - 1) != 0 {
        return 0;
    }
    if name != 0 && is_followed_name(name) {
        // Named again, or a region already: it stays what it is.
        if !regions::is_region_page(tgid, addr) {
            learn(tgid, tid, addr, len, REGION_NAMED);
        }
    } else {
        unmap(pid_tgid, addr, len);
    }
    0
}
named_program!(exit_prctl = EXIT_PRCTL);
