//! The machine the numbers come from: CPU, memory, kernel, bpftrace, load.

use std::{fs, process::Command};

use super::data::{Load, Machine};
use crate::util;

pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let mem_kib: f64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let date = util::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let bpftrace = util::output(Command::new("bpftrace").arg("--version"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "not found".to_owned());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        date,
        mem_gib: mem_kib / (1024.0 * 1024.0),
        bpftrace,
    }
}

pub fn loadavg() -> Load {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let one_min = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let three: Vec<&str> = text.split_whitespace().take(3).collect();
    Load {
        one_min,
        text: three.join(" "),
    }
}
