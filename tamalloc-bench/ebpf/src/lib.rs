//! Empty library so tamalloc-bench can build-depend on this crate and rebuild when it changes.
#![no_std]
