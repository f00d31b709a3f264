//! `--regions anon`: the heap. `brk` moves the program break; the heap is the pages up to
//! its page-aligned value, one region grown and shrunk in place, as mremap does a region.
//!
//! The heap's start is the program break of the first `brk` the programs see: `brk(0)`,
//! which the dynamic loader calls before anything else in a new image, so a command
//! followed from its start has its whole heap followed. A process followed later (`-p`)
//! has only what its heap grows by from then on followed (README, "Known limits").

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tamalloc_common::{
    abi::SYS_BRK,
    maps::Heap,
    trace::{EventKind, PAGE_SIZE, REGION_BRK, page_align},
};

use super::{RET_OFFSET, add_reserved, control, learn, read_u64, take_pending, unmap};
use crate::{
    maps::{HEAPS, PENDING},
    regions,
};

#[tracepoint]
pub fn exit_brk(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, _)) = take_pending(SYS_BRK) else {
        return 0;
    };
    let _ = PENDING.remove(pid_tgid);
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // brk returns the new program break, or the old one when it cannot move it.
    let Some(end) = page_align(read_u64(&ctx, RET_OFFSET)) else {
        return 0;
    };
    let Some(heap) = HEAPS.get_ptr_mut(tgid) else {
        let _ = HEAPS.insert(tgid, Heap { start: end, end }, 0);
        return 0;
    };
    // SAFETY: a live map value; brk calls of one process are serialized by its mmap_lock,
    // and this program is the value's only writer (fork copies it before the child runs).
    let (start, cur) = unsafe { ((*heap).start, (*heap).end) };
    if end > cur {
        // The new pages continue the heap's region, or begin it.
        match regions::region_at(tgid, cur.wrapping_sub(PAGE_SIZE)) {
            Some(last) if cur > start => {
                let grown = regions::add(tgid, cur, end - cur, last.id, last.index + 1);
                add_reserved(tgid, grown, false);
                let old_len = cur - last.id;
                control(
                    EventKind::Remap,
                    tgid,
                    tid,
                    last.id,
                    [old_len, last.id, end - last.id],
                    0,
                );
            }
            _ => learn(tgid, tid, cur, end - cur, REGION_BRK),
        }
    } else if end < cur {
        unmap(pid_tgid, end, cur - end);
    }
    // SAFETY: as above.
    unsafe { (*heap).end = end };
    0
}
named_program!(exit_brk = EXIT_BRK);
