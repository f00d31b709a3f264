//! Part 4: syscalls 555/554 against /proc and mmap, measured by `tamalloc-bench stats`
//! inside the patched kernel under QEMU (`cargo xtask vm`, a child of ours).

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    data::VmStats,
    plan::vm_script,
    process::Spawned,
    records::{self, Record},
};
use crate::{kernel::Version, util};

pub fn measure(
    work: &Path,
    kernel: Version,
    quick: bool,
    limit: Duration,
) -> anyhow::Result<VmStats> {
    let script = vm_script(quick);
    let me = std::env::current_exe().context("locating the xtask binary")?;
    let log = work.join("vm.txt");
    let t = Instant::now();
    let mut vm = Spawned::spawn(
        Command::new(me)
            .args(["vm", "--kernel", kernel.as_str()])
            .args(["--mem", "2048", "--timeout", "600", "--", "sh", "-c"])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).context("creating the VM log")?)
            .stderr(Stdio::inherit()),
    )?;
    // The kernel build cache is locked while any kernel builds: do not wait for ever.
    let status = loop {
        if let Some(st) = vm.try_wait().context("waiting for cargo xtask vm")? {
            break st;
        }
        if t.elapsed() > limit {
            // SIGTERM first: `xtask vm` then stops QEMU itself.
            vm.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_secs(5));
            bail!(
                "cargo xtask vm did not finish within {} s (is a kernel build holding the \
                 kernel cache lock?)",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        bail!(
            "cargo xtask vm failed ({status}):\n{}",
            util::last_lines(&text, 15)
        );
    }
    let rows: Vec<_> = records::parse(&text)?
        .into_iter()
        .filter_map(|r| match r {
            Record::BenchStats(row) => Some(row),
            _ => None,
        })
        .collect();
    if rows.is_empty() {
        bail!("the guest printed no bench_stats record");
    }
    Ok(VmStats {
        rows,
        seconds: t.elapsed().as_secs_f64(),
    })
}
