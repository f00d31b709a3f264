//! ① Where kernel events enter: one module per hook, each the kernel half of what the
//! tracer reads back. `syscalls` learns regions (554, or the documented mmap fallback) and
//! keeps them true through munmap/mremap/madvise; `lifecycle` (sched) copies them on fork
//! and drops them on exec/exit; `faults` (exceptions) classifies and counts faults in region
//! pages, and streams them on demand (tracepoint mode); `installs` (fexit/fentry) counts
//! what the kernel installed in region pages instead (kernel mode, chosen at load); both
//! hand each counted first touch to `stacks` with `--stacks`. They keep their state through
//! `crate::regions` and `crate::maps`.

mod faults;
mod installs;
mod lifecycle;
mod stacks;
mod syscalls;
