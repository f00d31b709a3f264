//! tamalloc: a lazy-zeroing allocator (syscall 554), its memory statistics (555/556), and a
//! tracer that watches first-touch faults in tamalloc regions as they happen.

pub mod alloc;
pub mod capi;
pub mod error;
pub mod output;
pub mod report;
pub mod size;
pub mod stats;
pub mod tracer;

pub use alloc::{Path, Region, alloc};
pub use error::Error;
