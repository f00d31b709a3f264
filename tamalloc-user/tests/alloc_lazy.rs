//! One test alone in its binary, so that no other test thread moves VmSize/VmRSS meanwhile:
//! a region costs address space at once and memory only when touched, and Drop unmaps it.

use tamalloc::{Path, alloc, stats::self_vm_kib};

/// The /proc/self/maps lines that overlap `start..end`, with whether each covers all of it.
/// (A fallback region may merge with a neighbouring mapping of the same flags.)
fn maps_lines(start: usize, end: usize) -> Vec<(String, bool)> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter_map(|l| {
            let range = l.split(' ').next()?;
            let (a, b) = range.split_once('-')?;
            let a = usize::from_str_radix(a, 16).ok()?;
            let b = usize::from_str_radix(b, 16).ok()?;
            (a < end && start < b).then(|| (l.to_owned(), a <= start && end <= b))
        })
        .collect()
}

#[test]
fn region_is_lazy_zeroed_and_unmapped_on_drop() {
    const LEN: usize = 64 << 20;
    let len_kib = (LEN / 1024) as u64;
    self_vm_kib().expect("warm up");
    let (size0, rss0) = self_vm_kib().expect("VmSize/VmRSS");

    let r = alloc(LEN + 1).expect("alloc");
    assert_eq!(r.len(), LEN + 4096, "rounded up to whole pages");
    assert_eq!(r.len() % 4096, 0);
    assert_eq!(r.as_ptr() as usize % 4096, 0, "page aligned");
    let (size1, rss1) = self_vm_kib().expect("VmSize/VmRSS");
    assert!(
        size1 - size0 >= len_kib + 4,
        "VmSize grows by the whole region at once: {size0} -> {size1} KiB"
    );
    assert!(
        size1 - size0 < len_kib + 4096,
        "VmSize grows by about the region: {size0} -> {size1} KiB"
    );
    assert!(
        rss1.saturating_sub(rss0) < len_kib / 8,
        "VmRSS does not grow with the allocation: {rss0} -> {rss1} KiB"
    );

    // Reading maps the shared zero page: everything is zero and VmRSS still does not grow.
    assert!(
        r.as_slice().iter().all(|&b| b == 0),
        "a fresh region reads zero"
    );
    let (_, rss2) = self_vm_kib().expect("VmSize/VmRSS");
    assert!(
        rss2.saturating_sub(rss0) < len_kib / 8,
        "reading zero pages costs no RSS: {rss0} -> {rss2} KiB"
    );

    let start = r.as_ptr() as usize;
    let end = start + r.len();
    let lines = maps_lines(start, end);
    assert_eq!(lines.len(), 1, "the region lies in one VMA: {lines:?}");
    let (line, covers) = &lines[0];
    assert!(covers, "{line}");
    assert!(line.contains("rw-p"), "private read-write: {line}");
    match r.path() {
        Path::Syscall => assert!(line.ends_with("[anon:tamalloc]"), "{line}"),
        Path::Fallback => assert!(!line.contains('['), "an anonymous mapping: {line}"),
    }

    drop(r);
    assert_eq!(maps_lines(start, end), [], "Drop unmaps the region");
    let (size3, _) = self_vm_kib().expect("VmSize/VmRSS");
    assert!(
        size3 < size1 - len_kib + 1024,
        "VmSize back down: {size1} -> {size3} KiB"
    );
}
