//! Whether the running kernel names anonymous memory (`prctl(PR_SET_VMA_ANON_NAME)`, needs
//! CONFIG_ANON_VMA_NAME), asked the only way the kernel tells: by naming a page of our own.

const PR_SET_VMA: libc::c_int = 0x5356_4d41;
const PR_SET_VMA_ANON_NAME: libc::c_ulong = 0;

/// Names a scratch page of this process and unmaps it; true when the kernel accepted.
pub fn kernel_names_anon_memory() -> bool {
    // SAFETY: a fresh private anonymous page of our own, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return false;
    }
    let name = c"tamalloc-probe";
    // SAFETY: prctl names [page, page + 4096), ours; `name` is NUL-terminated and outlives
    // the call.
    let ok = unsafe {
        libc::prctl(
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            page as libc::c_ulong,
            4096 as libc::c_ulong,
            name.as_ptr(),
        )
    } == 0;
    // SAFETY: the page mapped above, used by nothing else.
    unsafe { libc::munmap(page, 4096) };
    ok
}
