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
    maps::{DROP_MAP_FULL, Heap},
    trace::{EventKind, PAGE_SIZE, REGION_BRK, page_align},
};

use super::{RET_OFFSET, add_reserved, control, done, learn, read_u64, take_pending, unmap};
use crate::{
    maps::{HEAPS, count_drop},
    regions,
};

#[tracepoint]
pub fn exit_brk(ctx: TracePointContext) -> u32 {
    let Some((pid_tgid, p)) = take_pending(SYS_BRK) else {
        return 0;
    };
    done(pid_tgid, &p);
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // brk returns the new program break, or the old one when it cannot move it.
    let Some(end) = page_align(read_u64(&ctx, RET_OFFSET)) else {
        return 0;
    };
    let Some(heap) = HEAPS.get_ptr_mut(tgid) else {
        if HEAPS.insert(tgid, Heap { start: end, end }, 0).is_err() {
            count_drop(DROP_MAP_FULL);
        }
        return 0;
    };
    // SAFETY: a live map value, of which this program is the only writer (fork copies it
    // before the child runs). The kernel serializes brk calls under mmap_lock but their
    // sys_exit comes after it: two threads calling brk at once without a lock of their own
    // could be seen out of order (README, "Known limits"; malloc holds its arena's lock).
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
