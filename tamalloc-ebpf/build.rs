use which::which;

/// Building this crate needs `bpf-linker`; say so clearly instead of failing in the linker.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("bpf") && which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup` (it installs \
             bpf-linker 0.13 built against LLVM 22)"
        );
    }
}
