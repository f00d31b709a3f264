//! The C API: examples/c/example.c compiled against include/tamalloc.h and linked with the
//! libtamalloc.so that cargo built next to the `tamalloc` binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>/, where cargo leaves both the binary and the cdylib. `cargo test`
/// builds the library only as an rlib, so the cdylib is built here when it is missing
/// (a fresh clone) or older than the binary.
fn lib_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_tamalloc"));
    let dir = exe.parent().expect("the binary's directory").to_owned();
    let lib = dir.join("libtamalloc.so");
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if modified(&lib) < modified(exe) {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--lib", "--package", "tamalloc-user"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build --lib");
        assert!(
            status.success(),
            "cargo build --lib -p tamalloc-user failed"
        );
    }
    assert!(
        lib.is_file(),
        "{} is missing: the [lib] of tamalloc-user must list crate-type cdylib",
        lib.display()
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
fn header_matches_the_uapi_offsets() {
    // The _Static_asserts here and in the header are the check; compiling is the test.
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

#[test]
fn header_compiles_as_cpp() {
    let Ok(cxx) = which("c++") else {
        eprintln!("no c++ compiler: skipped");
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let src = dir.join("tamalloc-header-check.cpp");
    std::fs::write(
        &src,
        "#include \"tamalloc.h\"\n\
         long f(struct tamalloc_proc_stats *s) { return tamalloc_proc_stats(0, s, 1); }\n",
    )
    .expect("writing the check");
    let status = Command::new(cxx)
        .args(["-std=c++11", "-Wall", "-Werror", "-fsyntax-only", "-I"])
        .arg(crate_dir().join("include"))
        .arg(&src)
        .status()
        .expect("running c++");
    assert!(status.success(), "tamalloc.h does not compile as C++");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
