//! Empty library so tamalloc-user can depend on this crate and rebuild when it changes.
#![no_std]
