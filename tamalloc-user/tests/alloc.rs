//! The allocator's contract: errors keep the kernel's errno, regions are page-rounded, zeroed
//! and owned.

use tamalloc::{Error, Path, Region, alloc};

/// Whether this kernel has syscall 554 (the patched kernel in the VM does).
fn kernel_has_554() -> bool {
    // SAFETY: syscall 554 with size 0 maps nothing: -EINVAL on a patched kernel, ENOSYS otherwise.
    let r = unsafe { libc::syscall(554, 0usize) };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

#[test]
fn zero_size_is_einval() {
    let e = alloc(0).expect_err("alloc(0) must fail");
    assert_eq!(e.errno(), Some(libc::EINVAL));
    assert!(matches!(e, Error::Os { op: "tamalloc", .. }));
    assert_eq!(e.to_string(), "tamalloc(0): Invalid argument (EINVAL)");
}

#[test]
fn overflowing_size_is_enomem() {
    for size in [usize::MAX, usize::MAX - 4094] {
        let e = alloc(size).expect_err("a size that cannot be page aligned must fail");
        assert_eq!(e.errno(), Some(libc::ENOMEM), "{e}");
        assert!(
            e.to_string().ends_with("Cannot allocate memory (ENOMEM)"),
            "{e}"
        );
    }
}

#[test]
fn too_large_is_enomem() {
    // 1 PiB: page aligned fine, but no address space (or RLIMIT_AS) for it.
    let e = alloc(1 << 50).expect_err("1 PiB must fail");
    assert_eq!(e.errno(), Some(libc::ENOMEM), "{e}");
}

#[test]
fn path_matches_the_kernel() {
    let r = alloc(4096).expect("alloc");
    let want = if kernel_has_554() {
        Path::Syscall
    } else {
        Path::Fallback
    };
    assert_eq!(r.path(), want);
    assert_eq!(
        r.path().name(),
        if want == Path::Syscall {
            "syscall"
        } else {
            "fallback"
        }
    );
}

#[test]
fn sizes_round_up_to_pages() {
    for (ask, want) in [
        (1, 4096),
        (4095, 4096),
        (4096, 4096),
        (4097, 8192),
        (100_000, 102_400),
    ] {
        let r = alloc(ask).expect("alloc");
        assert_eq!(r.len(), want, "alloc({ask})");
        assert!(r.as_slice().iter().all(|&b| b == 0));
    }
}

#[test]
fn writes_stick_and_regions_are_independent() {
    let mut a = alloc(3 * 4096).expect("alloc");
    let b = alloc(3 * 4096).expect("alloc");
    a.as_mut_slice()[4096..8192].fill(0x5a);
    assert!(a.as_slice()[4096..8192].iter().all(|&x| x == 0x5a));
    assert!(a.as_slice()[..4096].iter().all(|&x| x == 0));
    assert!(b.as_slice().iter().all(|&x| x == 0));
    assert_ne!(a.as_ptr(), b.as_ptr());
}

#[test]
fn regions_move_between_threads() {
    let mut r = alloc(8192).expect("alloc");
    r.as_mut_slice()[0] = 1;
    let r = std::thread::spawn(move || {
        let mut r = r;
        r.as_mut_slice()[1] = 2;
        r
    })
    .join()
    .expect("thread");
    assert_eq!(&r.as_slice()[..3], &[1, 2, 0]);
}

#[test]
fn raw_round_trip_and_free() {
    let r = alloc(10_000).expect("alloc");
    let (ptr, len, path) = r.into_raw();
    assert_eq!(len, 12_288);
    // SAFETY: straight from into_raw; the original size works as well as the rounded length.
    let r: Region = unsafe { Region::from_raw(ptr, 10_000, path) };
    assert_eq!(r.len(), 12_288);
    assert_eq!(r.as_ptr(), ptr.as_ptr().cast_const());
    r.free().expect("munmap");
}
