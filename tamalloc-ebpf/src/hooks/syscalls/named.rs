//! `--regions name:NAME`: `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)` names
//! anonymous memory `[anon:name]` (kernels with CONFIG_ANON_VMA_NAME). A range named NAME
//! becomes a region; a followed range named anything else (or unnamed) stops being one, as
//! it stops being a NAME mapping for the kernel too.

use aya_ebpf::{
    helpers::bpf_probe_read_user_str_bytes, macros::tracepoint, programs::TracePointContext,
};
use tamalloc_common::{
    abi::SYS_PRCTL,
    maps::{ANON_NAME_MAX, DROP_CONTROL_EVENTS, DROP_REGION_CUT},
    trace::{PAGE_SIZE, REGION_NAMED, page_align},
};

use super::{ENOMEM, RET_OFFSET, done, learn, read_u64, take_pending, unmap};
use crate::maps::{REGION_NAME, count_drop};

pub(super) const PR_SET_VMA: u64 = 0x5356_4d41;
pub(super) const PR_SET_VMA_ANON_NAME: u64 = 0;

/// What the name at user address `ptr` is to us: NAME (`REGION_NAME`), another name (or
/// none: `ptr` 0 unnames), or unreadable.
enum Name {
    Followed,
    Other,
    Unreadable,
}

#[inline(always)]
fn read_name(ptr: u64) -> Name {
    if ptr == 0 {
        return Name::Other;
    }
    let Some(want) = REGION_NAME.get(0) else {
        return Name::Unreadable;
    };
    let mut buf = [0u8; ANON_NAME_MAX];
    // SAFETY: bpf_probe_read_user_str copes with any user pointer and stops at the NUL.
    let Ok(got) = (unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut buf) }) else {
        return Name::Unreadable;
    };
    let n = got.len();
    // NAME is NUL-padded: equal when the first n bytes match and NAME ends there.
    if n == 0 || n >= ANON_NAME_MAX || want[n] != 0 {
        return Name::Other;
    }
    let mut i = 0;
    while i < ANON_NAME_MAX {
        if i < n && buf[i] != want[i] {
            return Name::Other;
        }
        i += 1;
    }
    Name::Followed
}

#[tracepoint]
pub fn exit_prctl(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_PRCTL) else {
        return 0;
    };
    done(pid_tgid, &p);
    let ret = read_u64(&ctx, RET_OFFSET) as i64;
    let (tgid, tid, addr) = ((pid_tgid >> 32) as u32, pid_tgid as u32, p.args[2]);
    let Some(len) = page_align(p.args[3]) else {
        return 0;
    };
    if len == 0 || addr & (PAGE_SIZE - 1) != 0 || (ret != 0 && ret != -ENOMEM) {
        return 0;
    }
    // -ENOMEM: the range had holes, and the kernel named its mapped parts all the same.
    match read_name(p.args[4]) {
        // Named NAME: one region from here, whatever was followed there before (those
        // pages start afresh, README "Known limits").
        Name::Followed if ret == 0 => {
            unmap(pid_tgid, addr, len);
            learn(tgid, tid, addr, len, REGION_NAMED);
        }
        // Which parts are mapped is not known here: not followed, and said so.
        Name::Followed => count_drop(DROP_REGION_CUT),
        Name::Other => unmap(pid_tgid, addr, len),
        // The name is the kernel's now, so what it was cannot be told: leave the range.
        Name::Unreadable => count_drop(DROP_CONTROL_EVENTS),
    }
    0
}
named_program!(exit_prctl = EXIT_PRCTL);
