//! The C API: examples/c/example.c compiled against include/tamalloc.h and linked with the
//! libtamalloc.so that cargo built next to the `tamalloc` binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>/, where cargo leaves both the binary and the cdylib.
fn lib_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_tamalloc"));
    let dir = exe.parent().expect("the binary's directory").to_owned();
    assert!(
        dir.join("libtamalloc.so").is_file(),
        "{} is missing: the [lib] of tamalloc-user must list crate-type cdylib",
        dir.join("libtamalloc.so").display()
    );
    dir
}

fn cc(args: &[&str], out: &Path) {
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
        .args(args)
        .arg("-o")
        .arg(out)
        .status()
        .expect("running the C compiler (cc)");
    assert!(status.success(), "cc {args:?} failed");
}

#[test]
fn c_example_builds_and_runs() {
    let lib = lib_dir();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tamalloc-c-example");
    let include = crate_dir().join("include");
    let source = crate_dir().join("examples/c/example.c");
    cc(
        &[
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            include.to_str().expect("utf-8 path"),
            source.to_str().expect("utf-8 path"),
            "-L",
            lib.to_str().expect("utf-8 path"),
            "-ltamalloc",
        ],
        &out,
    );
    let run = Command::new(&out)
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .expect("running the example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "example failed: {stdout}\n{stderr}");
    assert!(stdout.contains("after alloc:"), "{stdout}");
    assert!(
        stdout.contains("tamalloc(0): Invalid argument (EINVAL)"),
        "{stdout}"
    );
}

#[test]
fn header_matches_the_uapi_sizes_in_cpp_too() {
    // The _Static_asserts in the header are the check; compiling it is the test.
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tamalloc-header-check.o");
    let src = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tamalloc-header-check.c");
    std::fs::write(
        &src,
        "#include <stddef.h>\n#include \"tamalloc.h\"\n\
         _Static_assert(offsetof(struct tamalloc_proc_stats, comm) == 16, \"comm\");\n\
         _Static_assert(offsetof(struct tamalloc_proc_stats, vm_size_kib) == 32, \"vm_size\");\n\
         _Static_assert(offsetof(struct tamalloc_proc_stats, tamalloc_resident_kib) == 88, \"last\");\n\
         _Static_assert(offsetof(struct tamalloc_global_stats, commit_limit_kib) == 72, \"last\");\n",
    )
    .expect("writing the check");
    let include = crate_dir().join("include");
    cc(
        &[
            "-std=c11",
            "-Wall",
            "-Werror",
            "-c",
            "-I",
            include.to_str().expect("utf-8 path"),
            src.to_str().expect("utf-8 path"),
        ],
        &out,
    );
}
