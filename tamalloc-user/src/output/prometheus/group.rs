//! What a Prometheus series stands for (`--prometheus-by`): one process, one command name or
//! one cgroup; and the per-process bookkeeping that keeps a group's counters monotonic while
//! its processes exit, exec (change comm) or move between cgroups.
//!
//! Each process's fault totals are added to its group as deltas: what it has counted since
//! the last refresh goes to the group it is in now. So a process that execs leaves its
//! earlier faults with its old comm and adds later ones to the new; a process that exits
//! leaves its faults where they are. A total that goes down is the same pid starting a new
//! life: all of it is new. No group counter ever decreases.

use std::collections::HashMap;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};
use tamalloc_common::trace::FAULT_KINDS;

use crate::tracer::Row;

/// How `tamalloc trace --prometheus` labels its per-process metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One series per process, `{pid,comm}` (high cardinality: one series per pid ever seen).
    Pid,
    /// One series per command name, `{comm}`: the sum over its live and exited processes.
    #[default]
    Comm,
    /// One series per cgroup v2 path, `{cgroup}` (the `0::` line of /proc/PID/cgroup; on a
    /// v1-only host the memory controller's path; `?` when never readable).
    Cgroup,
}

impl GroupBy {
    /// What one series stands for, for the metrics' help text.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Pid => "process",
            Self::Comm => "command name",
            Self::Cgroup => "cgroup",
        }
    }
}

/// The label value of a comm or cgroup that could not be read.
pub const UNKNOWN: &str = "?";

/// One series' labels (without `kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Group {
    Pid { pid: u32, comm: String },
    Comm(String),
    Cgroup(String),
}

impl Group {
    /// Its labels, into a label set that may hold more (`kind`).
    pub fn encode_labels(&self, enc: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Self::Pid { pid, comm } => {
                ("pid", *pid).encode(enc.encode_label())?;
                ("comm", comm.as_str()).encode(enc.encode_label())
            }
            Self::Comm(comm) => ("comm", comm.as_str()).encode(enc.encode_label()),
            Self::Cgroup(path) => ("cgroup", path.as_str()).encode(enc.encode_label()),
        }
    }
}

impl EncodeLabelSet for Group {
    fn encode(&self, mut enc: LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.encode_labels(&mut enc)
    }
}

/// The cgroup path a `/proc/PID/cgroup` text names: the unified (v2) hierarchy's `0::PATH`
/// line, also on a hybrid host; on a v1-only host the memory controller's path (where a
/// process's memory is charged); else None.
pub fn cgroup_path(text: &str) -> Option<String> {
    let mut memory = None;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            return Some(path.to_owned());
        }
        if memory.is_none() && controllers.split(',').any(|c| c == "memory") {
            memory = Some(path.to_owned());
        }
    }
    memory
}

/// The cgroup of a live process, read from /proc.
pub fn read_cgroup(pid: u32) -> Option<String> {
    cgroup_path(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// A process's gauge values: reserved, resident and VmRSS bytes.
pub type Gauges = [u64; 3];

/// What a refresh adds to and sets in the registry.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    /// Fault deltas per group and kind (every group with a process in the snapshot, so its
    /// series exist from the first scrape on, at zero).
    pub faults: HashMap<Group, [u64; FAULT_KINDS]>,
    /// Per group with a live process: the number of live processes and their summed gauges
    /// (None while no live process of it has had its stats read).
    pub live: HashMap<Group, (u64, Option<Gauges>)>,
}

#[derive(Debug)]
struct Seen {
    group: Group,
    /// Totals already added to a group.
    faults: [u64; FAULT_KINDS],
    gauges: Option<Gauges>,
}

/// Turns snapshots of per-process totals into per-group deltas and sums.
pub struct Grouper {
    by: GroupBy,
    /// Reads a live process's cgroup (a parameter so tests need no /proc).
    cgroup_of: fn(u32) -> Option<String>,
    procs: HashMap<u32, Seen>,
    /// `--prometheus-by pid`: totals already added per `{pid,comm}` series, as before
    /// grouping existed (a new comm's series starts at the pid's whole total).
    by_series: HashMap<Group, [u64; FAULT_KINDS]>,
}

impl Grouper {
    pub fn new(by: GroupBy) -> Self {
        Self::with_cgroup_reader(by, read_cgroup)
    }

    pub fn with_cgroup_reader(by: GroupBy, cgroup_of: fn(u32) -> Option<String>) -> Self {
        Self {
            by,
            cgroup_of,
            procs: HashMap::new(),
            by_series: HashMap::new(),
        }
    }

    /// The group `row`'s process is in now; when that cannot be read (an exited process's
    /// cgroup, a comm cleared by exec and not read again), the one it was last seen in.
    fn group_of(&self, row: &Row) -> Group {
        let last = self.procs.get(&row.pid).map(|s| &s.group);
        let comm = &row.state.comm;
        match self.by {
            GroupBy::Pid => Group::Pid {
                pid: row.pid,
                comm: comm.clone(),
            },
            // An empty label is no label to Prometheus: a comm never read is `?`.
            GroupBy::Comm if comm.is_empty() => last
                .cloned()
                .unwrap_or_else(|| Group::Comm(UNKNOWN.to_owned())),
            GroupBy::Comm => Group::Comm(comm.clone()),
            GroupBy::Cgroup => {
                let now = if row.state.exited {
                    None
                } else {
                    (self.cgroup_of)(row.pid)
                };
                match (now, last) {
                    (Some(path), _) => Group::Cgroup(path),
                    (None, Some(g)) => g.clone(),
                    (None, None) => Group::Cgroup(UNKNOWN.to_owned()),
                }
            }
        }
    }

    pub fn update(&mut self, rows: &[Row]) -> Update {
        let mut up = Update::default();
        for row in rows {
            let group = self.group_of(row);
            let total = row.state.counters.faults;
            let seen = self.procs.entry(row.pid).or_insert_with(|| Seen {
                group: group.clone(),
                faults: [0; FAULT_KINDS],
                gauges: None,
            });
            let deltas = up.faults.entry(group.clone()).or_default();
            if self.by == GroupBy::Pid {
                let added = self.by_series.entry(group.clone()).or_default();
                for k in 0..FAULT_KINDS {
                    if total[k] > added[k] {
                        deltas[k] += total[k] - added[k];
                        added[k] = total[k];
                    }
                }
            } else {
                for k in 0..FAULT_KINDS {
                    // Below what was added: the pid's new life, counted from zero.
                    let new = total[k].checked_sub(seen.faults[k]).unwrap_or(total[k]);
                    deltas[k] += new;
                }
                seen.faults = total;
            }
            seen.group = group.clone();
            if row.state.exited {
                seen.gauges = None;
                continue;
            }
            if let Some(s) = &row.stats {
                seen.gauges = Some([
                    row.state.reserved_bytes(),
                    s.tamalloc_resident_kib.saturating_mul(1024),
                    s.vm_rss_kib.saturating_mul(1024),
                ]);
            }
            let (n, sum) = up.live.entry(group).or_default();
            *n += 1;
            if let Some(g) = seen.gauges {
                let sum = sum.get_or_insert([0; 3]);
                for (s, v) in sum.iter_mut().zip(g) {
                    *s = s.saturating_add(v);
                }
            }
        }
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::aggregate::ProcState;
    use tamalloc_common::trace::FaultKind;

    const W: usize = FaultKind::WriteZero as usize;

    fn row(pid: u32, comm: &str, write_zero: u64, exited: bool) -> Row {
        let mut state = ProcState {
            comm: comm.into(),
            exited,
            counted: true,
            ..Default::default()
        };
        state.counters.faults[W] = write_zero;
        state.counters.reserved_bytes = 4096;
        let stats = tamalloc_common::abi::ProcStats {
            vm_rss_kib: 10,
            tamalloc_resident_kib: 1,
            ..Default::default()
        };
        Row {
            pid,
            state,
            stats: (!exited).then_some(stats),
            rss_delta_kib: None,
        }
    }

    fn comm(c: &str) -> Group {
        Group::Comm(c.into())
    }

    /// The group counters a sequence of refreshes builds up.
    fn run(g: &mut Grouper, totals: &mut HashMap<Group, u64>, rows: &[Row]) -> Update {
        let up = g.update(rows);
        for (group, d) in &up.faults {
            *totals.entry(group.clone()).or_default() += d[W];
        }
        up
    }

    #[test]
    fn two_processes_of_one_comm_are_summed() {
        let mut g = Grouper::new(GroupBy::Comm);
        let up = g.update(&[row(1, "a", 3, false), row(2, "a", 4, false)]);
        assert_eq!(up.faults[&comm("a")][W], 7);
        assert_eq!(
            up.live[&comm("a")],
            (2, Some([8192, 2048, 20480])),
            "processes and summed gauges"
        );
    }

    #[test]
    fn an_exited_process_keeps_its_faults_and_loses_its_gauges() {
        let mut g = Grouper::new(GroupBy::Comm);
        let mut totals = HashMap::new();
        run(
            &mut g,
            &mut totals,
            &[row(1, "a", 3, false), row(2, "a", 4, false)],
        );
        let up = run(
            &mut g,
            &mut totals,
            &[row(1, "a", 5, true), row(2, "a", 4, false)],
        );
        assert_eq!(totals[&comm("a")], 9);
        assert_eq!(up.live[&comm("a")], (1, Some([4096, 1024, 10240])));
        // The last one gone: no live entry, so the view removes the group's gauges.
        let up = run(
            &mut g,
            &mut totals,
            &[row(1, "a", 5, true), row(2, "a", 6, true)],
        );
        assert_eq!(totals[&comm("a")], 11);
        assert!(up.live.is_empty(), "{up:?}");
        // And later refreshes add nothing.
        run(
            &mut g,
            &mut totals,
            &[row(1, "a", 5, true), row(2, "a", 6, true)],
        );
        assert_eq!(totals[&comm("a")], 11);
    }

    #[test]
    fn exec_moves_later_faults_to_the_new_comm() {
        let mut g = Grouper::new(GroupBy::Comm);
        let mut totals = HashMap::new();
        run(&mut g, &mut totals, &[row(1, "sh", 2, false)]);
        // Right after exec the comm is not read yet: the faults stay with the old comm.
        run(&mut g, &mut totals, &[row(1, "", 3, false)]);
        assert_eq!(totals[&comm("sh")], 3);
        assert!(!totals.contains_key(&comm("")), "{totals:?}");
        // Never read at all: `?`.
        run(&mut g, &mut totals, &[row(2, "", 1, false)]);
        assert_eq!(totals[&comm("?")], 1);
        let up = run(&mut g, &mut totals, &[row(1, "demo", 10, false)]);
        assert_eq!(totals[&comm("sh")], 3, "the old series keeps its count");
        assert_eq!(totals[&comm("demo")], 7, "only the faults since the exec");
        assert!(!up.live.contains_key(&comm("sh")), "sh has no live process");
        assert_eq!(up.live[&comm("demo")].0, 1);
    }

    #[test]
    fn a_reused_pid_counts_its_new_life_from_zero() {
        let mut g = Grouper::new(GroupBy::Comm);
        let mut totals = HashMap::new();
        run(&mut g, &mut totals, &[row(1, "a", 8, true)]);
        run(&mut g, &mut totals, &[row(1, "b", 2, false)]);
        assert_eq!((totals[&comm("a")], totals[&comm("b")]), (8, 2));
        run(&mut g, &mut totals, &[row(1, "b", 5, false)]);
        assert_eq!((totals[&comm("a")], totals[&comm("b")]), (8, 5));
    }

    #[test]
    fn by_pid_keeps_the_series_per_pid_and_comm() {
        let mut g = Grouper::new(GroupBy::Pid);
        let mut totals = HashMap::new();
        run(
            &mut g,
            &mut totals,
            &[row(1, "a", 3, false), row(2, "a", 4, false)],
        );
        let up = run(
            &mut g,
            &mut totals,
            &[row(1, "b", 5, false), row(2, "a", 4, false)],
        );
        let s = |pid, c: &str| Group::Pid {
            pid,
            comm: c.into(),
        };
        // As before grouping: a new comm's series carries the pid's total.
        assert_eq!(totals[&s(1, "a")], 3);
        assert_eq!(totals[&s(1, "b")], 5);
        assert_eq!(totals[&s(2, "a")], 4);
        assert_eq!(up.live.len(), 2, "{up:?}");
    }

    #[test]
    fn by_cgroup_follows_moves_and_groups_unreadable_ones_under_a_question_mark() {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        static MOVED: AtomicBool = AtomicBool::new(false);
        fn fake(pid: u32) -> Option<String> {
            match pid {
                1 if MOVED.load(Relaxed) => Some("/c".into()),
                1 | 2 => Some("/a/b".into()),
                _ => None,
            }
        }
        let mut g = Grouper::with_cgroup_reader(GroupBy::Cgroup, fake);
        let mut totals = HashMap::new();
        let cg = |p: &str| Group::Cgroup(p.into());
        run(
            &mut g,
            &mut totals,
            &[
                row(1, "x", 1, false),
                row(2, "y", 2, false),
                row(3, "z", 4, false),
            ],
        );
        assert_eq!(totals[&cg("/a/b")], 3);
        assert_eq!(totals[&cg("?")], 4);
        // Moved: later faults go to the new cgroup, the old one keeps its count.
        MOVED.store(true, Relaxed);
        let up = run(
            &mut g,
            &mut totals,
            &[row(1, "x", 3, false), row(2, "y", 2, false)],
        );
        assert_eq!((totals[&cg("/a/b")], totals[&cg("/c")]), (3, 2));
        assert_eq!((up.live[&cg("/a/b")].0, up.live[&cg("/c")].0), (1, 1));
        // Exited: no read (the pid may be another process's now); its last cgroup.
        let up = run(
            &mut g,
            &mut totals,
            &[row(1, "x", 4, true), row(2, "y", 2, true)],
        );
        assert_eq!((totals[&cg("/a/b")], totals[&cg("/c")]), (3, 3));
        assert!(up.live.is_empty(), "{up:?}");
    }

    #[test]
    fn cgroup_paths_from_proc_text() {
        assert_eq!(
            cgroup_path("0::/user.slice/session-1.scope\n").as_deref(),
            Some("/user.slice/session-1.scope")
        );
        let hybrid =
            "12:memory:/user.slice\n1:name=systemd:/user.slice/s.scope\n0::/user.slice/s.scope\n";
        assert_eq!(cgroup_path(hybrid).as_deref(), Some("/user.slice/s.scope"));
        let v1 = "5:cpu,cpuacct:/x\n4:blkio,memory:/system.slice/m.service\n1:name=systemd:/y\n";
        assert_eq!(cgroup_path(v1).as_deref(), Some("/system.slice/m.service"));
        assert_eq!(cgroup_path("0::/a:b\n").as_deref(), Some("/a:b"));
        assert_eq!(cgroup_path("1:name=systemd:/y\n"), None);
        assert_eq!(cgroup_path(""), None);
    }
}
