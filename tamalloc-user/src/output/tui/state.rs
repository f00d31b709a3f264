//! What the live view shows, apart from drawing it: the snapshot on screen, each process's
//! history (for the chart and the sparklines), the sort order, the selection and pause.
//! Plain data, so it is tested without a terminal.

use std::collections::{BTreeMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tamalloc_common::trace::{FAULT_KINDS, FaultKind, PAGE_SIZE};

use crate::tracer::{Row, Snapshot};

/// Samples kept per process: ten minutes at the default 1 s interval.
pub const HISTORY: usize = 600;

/// One process at one refresh.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the trace started.
    pub t: f64,
    /// Bytes of its followed regions (the tracer's counters), in KiB.
    pub reserved_kib: u64,
    /// Resident KiB of its tamalloc regions as the kernel reports them (syscall 555, or
    /// /proc's smaps): 0 where neither tells.
    pub kernel_resident_kib: u64,
    /// KiB made resident by the first touches seen (write_zero + cow_zero pages).
    pub touched_resident_kib: u64,
    pub vm_rss_kib: u64,
    /// First touches per second since the previous sample, by kind.
    pub rate: [f64; FAULT_KINDS],
}

/// A process's samples, oldest first, at most [`HISTORY`].
#[derive(Clone, Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
    /// The fault counters at the previous sample, and when, for the rates.
    last: Option<(f64, [u64; FAULT_KINDS])>,
}

impl History {
    /// A sample at `t`; `previous` is when the refresh before it was (a process first seen
    /// now made its first touches since then: it had no regions before).
    fn push(&mut self, t: f64, previous: Option<f64>, row: &Row) {
        let faults = row.state.counters.faults;
        let mut rate = [0.0; FAULT_KINDS];
        let since = self
            .last
            .or_else(|| previous.map(|p| (p, [0; FAULT_KINDS])));
        if let Some((t0, f0)) = since
            && t > t0
        {
            for ((r, now), before) in rate.iter_mut().zip(faults).zip(f0) {
                *r = now.saturating_sub(before) as f64 / (t - t0);
            }
        }
        self.last = Some((t, faults));
        if self.samples.len() == HISTORY {
            self.samples.pop_front();
        }
        let page_kib = PAGE_SIZE / 1024;
        self.samples.push_back(Sample {
            t,
            reserved_kib: row.state.reserved_bytes() / 1024,
            kernel_resident_kib: row.stats.map_or(0, |s| s.tamalloc_resident_kib),
            touched_resident_kib: row.state.pages_made_resident() * page_kib,
            vm_rss_kib: row.stats.map_or(0, |s| s.vm_rss_kib),
            rate,
        });
    }

    /// The samples up to `t` seconds (the time on screen), oldest first.
    pub fn until(&self, t: f64) -> impl Iterator<Item = &Sample> {
        self.samples.iter().take_while(move |s| s.t <= t)
    }

    /// Whether the kernel reported resident sizes (else the chart's resident line is the
    /// pages first touched by writes, as `tamalloc report` draws it).
    pub fn kernel_resident(&self) -> bool {
        self.samples.iter().any(|s| s.kernel_resident_kib > 0)
    }
}

/// The column the process table is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Pid,
    Reserved,
    /// First touches of every kind.
    Faults,
    VmRss,
    Comm,
}

impl SortKey {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pid => "PID",
            Self::Reserved => "RESERVED",
            Self::Faults => "FAULTS",
            Self::VmRss => "VmRSS",
            Self::Comm => "COMM",
        }
    }

    /// The next key of the `s` cycle.
    fn next(self) -> Self {
        match self {
            Self::Pid => Self::Reserved,
            Self::Reserved => Self::Faults,
            Self::Faults => Self::VmRss,
            Self::VmRss => Self::Comm,
            Self::Comm => Self::Pid,
        }
    }

    /// Sizes sort largest first, names and pids in order, before `r` reverses.
    fn descending(self) -> bool {
        matches!(self, Self::Reserved | Self::Faults | Self::VmRss)
    }
}

/// What a key asks of the view's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    /// End the session (as Ctrl-C does).
    Quit,
}

/// Everything the view shows.
#[derive(Debug, Default)]
pub struct State {
    /// The snapshot on screen (held while paused).
    shown: Option<Snapshot>,
    /// The newest snapshot that arrived while paused.
    pending: Option<Snapshot>,
    history: BTreeMap<u32, History>,
    /// The time of the latest refresh.
    last_t: Option<f64>,
    pub sort: SortKey,
    pub reverse: bool,
    /// The selected process, by pid, so it stays selected when the order changes.
    selected: Option<u32>,
    pub paused: bool,
    /// Where the traced command's output goes, named in the header.
    pub command_output: Option<String>,
    /// Set once `q` was pressed: the session is ending.
    pub quitting: bool,
}

impl State {
    pub fn new(command_output: Option<String>) -> Self {
        Self {
            command_output,
            ..Self::default()
        }
    }

    /// A refresh: every live process gets a sample; the screen follows unless paused.
    pub fn push(&mut self, snap: Snapshot) {
        let t = snap.elapsed.as_secs_f64();
        let previous = self.last_t.replace(t);
        for row in snap.rows.iter().filter(|r| !r.state.exited) {
            self.history
                .entry(row.pid)
                .or_default()
                .push(t, previous, row);
        }
        if self.paused {
            self.pending = Some(snap);
        } else {
            self.shown = Some(snap);
        }
        if self.selected.is_none() {
            let first = self.rows().first().map(|r| r.pid);
            self.selected = first;
        }
    }

    pub fn shown(&self) -> Option<&Snapshot> {
        self.shown.as_ref()
    }

    /// The rows on screen, in the table's order.
    pub fn rows(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.shown.iter().flat_map(|s| &s.rows).collect();
        let key = self.sort;
        rows.sort_by(|a, b| {
            let ord = match key {
                SortKey::Pid => a.pid.cmp(&b.pid),
                SortKey::Comm => a.state.comm.cmp(&b.state.comm),
                SortKey::Reserved => a.state.reserved_bytes().cmp(&b.state.reserved_bytes()),
                SortKey::Faults => faults(a).cmp(&faults(b)),
                SortKey::VmRss => rss(a).cmp(&rss(b)),
            };
            let ord = if key.descending() { ord.reverse() } else { ord };
            let ord = if self.reverse { ord.reverse() } else { ord };
            ord.then(a.pid.cmp(&b.pid))
        });
        rows
    }

    /// The selected row's index in [`State::rows`] (the first row when the selected process
    /// is not on screen).
    pub fn selected_index(&self) -> Option<usize> {
        let rows = self.rows();
        if rows.is_empty() {
            return None;
        }
        Some(
            rows.iter()
                .position(|r| Some(r.pid) == self.selected)
                .unwrap_or(0),
        )
    }

    pub fn selected(&self) -> Option<&Row> {
        let i = self.selected_index()?;
        self.rows().get(i).copied()
    }

    pub fn history(&self, pid: u32) -> Option<&History> {
        self.history.get(&pid)
    }

    /// Seconds since the start, as on screen.
    pub fn now(&self) -> f64 {
        self.shown.as_ref().map_or(0.0, |s| s.elapsed.as_secs_f64())
    }

    fn select_by(&mut self, step: isize) -> Action {
        let Some(i) = self.selected_index() else {
            return Action::None;
        };
        let pids: Vec<u32> = self.rows().iter().map(|r| r.pid).collect();
        let j = i.saturating_add_signed(step).min(pids.len() - 1);
        self.selected = Some(pids[j]);
        Action::Redraw
    }

    fn select_at(&mut self, end: bool) -> Action {
        let pid = {
            let rows = self.rows();
            let row = if end { rows.last() } else { rows.first() };
            row.map(|r| r.pid)
        };
        self.selected = pid;
        Action::Redraw
    }

    fn toggle_pause(&mut self) -> Action {
        self.paused = !self.paused;
        if !self.paused
            && let Some(snap) = self.pending.take()
        {
            self.shown = Some(snap);
        }
        Action::Redraw
    }

    /// Applies a key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => self.quit(),
            KeyCode::Char('q') | KeyCode::Esc => self.quit(),
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                Action::Redraw
            }
            KeyCode::Char('r') => {
                self.reverse = !self.reverse;
                Action::Redraw
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Down | KeyCode::Char('j') => self.select_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.select_by(-1),
            KeyCode::PageDown => self.select_by(10),
            KeyCode::PageUp => self.select_by(-10),
            KeyCode::Home | KeyCode::Char('g') => self.select_at(false),
            KeyCode::End | KeyCode::Char('G') => self.select_at(true),
            _ => Action::None,
        }
    }

    fn quit(&mut self) -> Action {
        self.quitting = true;
        Action::Quit
    }
}

fn faults(r: &Row) -> u64 {
    FaultKind::ALL.iter().map(|&k| r.state.faults(k)).sum()
}

fn rss(r: &Row) -> u64 {
    r.stats.map_or(0, |s| s.vm_rss_kib)
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tracer::aggregate::ProcState;

    /// A row with `write_zero` first touches and `reserved` bytes, alive.
    pub fn row(pid: u32, comm: &str, reserved: u64, write_zero: u64) -> Row {
        let mut state = ProcState {
            comm: comm.into(),
            counted: true,
            ..Default::default()
        };
        state.counters.reserved_bytes = reserved;
        state.counters.regions = 1;
        state.counters.faults[FaultKind::WriteZero as usize] = write_zero;
        let stats = tamalloc_common::abi::ProcStats {
            pid: pid as i32,
            vm_rss_kib: 1024 + write_zero * 4,
            vm_size_kib: 4096 + reserved / 1024,
            ..Default::default()
        };
        Row {
            pid,
            state,
            stats: Some(stats),
            rss_delta_kib: None,
        }
    }

    pub fn snapshot(secs: f64, rows: Vec<Row>) -> Snapshot {
        Snapshot {
            elapsed: Duration::from_secs_f64(secs),
            rows,
            global: None,
            drops: Default::default(),
            stats_source: "procfs",
            command_status: None,
            stacks: Vec::new(),
        }
    }

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn pids(s: &State) -> Vec<u32> {
        s.rows().iter().map(|r| r.pid).collect()
    }

    #[test]
    fn sort_cycles_and_the_selection_follows_the_process() {
        let mut s = State::new(None);
        s.push(snapshot(
            1.0,
            vec![
                row(10, "b", 1 << 20, 5),
                row(20, "a", 8 << 20, 1),
                row(30, "c", 4 << 20, 9),
            ],
        ));
        assert_eq!(pids(&s), [10, 20, 30]);
        assert_eq!(s.selected().map(|r| r.pid), Some(10));
        assert_eq!(s.key(press(KeyCode::Char('s'))), Action::Redraw);
        assert_eq!(s.sort, SortKey::Reserved);
        assert_eq!(pids(&s), [20, 30, 10]);
        // Still pid 10, now the last row.
        assert_eq!(s.selected_index(), Some(2));
        s.key(press(KeyCode::Char('s')));
        assert_eq!((s.sort, pids(&s)), (SortKey::Faults, vec![30, 10, 20]));
        s.key(press(KeyCode::Char('r')));
        assert_eq!(pids(&s), [20, 10, 30]);
        s.key(press(KeyCode::Char('s')));
        s.key(press(KeyCode::Char('s')));
        s.key(press(KeyCode::Char('r')));
        assert_eq!((s.sort, pids(&s)), (SortKey::Comm, vec![20, 10, 30]));
        s.key(press(KeyCode::Char('s')));
        assert_eq!(s.sort, SortKey::Pid);
    }

    #[test]
    fn selection_moves_and_stops_at_the_ends() {
        let mut s = State::new(None);
        s.push(snapshot(
            1.0,
            vec![row(1, "a", 0, 0), row(2, "b", 0, 0), row(3, "c", 0, 0)],
        ));
        s.key(press(KeyCode::Up));
        assert_eq!(s.selected().map(|r| r.pid), Some(1));
        s.key(press(KeyCode::Down));
        s.key(press(KeyCode::Char('j')));
        s.key(press(KeyCode::Down));
        assert_eq!(s.selected().map(|r| r.pid), Some(3));
        s.key(press(KeyCode::Home));
        assert_eq!(s.selected().map(|r| r.pid), Some(1));
        s.key(press(KeyCode::End));
        assert_eq!(s.selected().map(|r| r.pid), Some(3));
    }

    #[test]
    fn pause_holds_the_screen_but_keeps_the_history() {
        let mut s = State::new(None);
        s.push(snapshot(1.0, vec![row(1, "a", 4096, 0)]));
        s.key(press(KeyCode::Char('p')));
        assert!(s.paused);
        s.push(snapshot(2.0, vec![row(1, "a", 4096, 100)]));
        assert_eq!(s.now(), 1.0);
        assert_eq!(s.rows()[0].state.faults(FaultKind::WriteZero), 0);
        let h = s.history(1).map_or(0, |h| h.until(f64::INFINITY).count());
        assert_eq!(h, 2, "sampled while paused");
        // The chart stops where the screen is.
        assert_eq!(s.history(1).map(|h| h.until(s.now()).count()), Some(1));
        s.key(press(KeyCode::Char(' ')));
        assert_eq!(s.now(), 2.0);
        assert_eq!(s.rows()[0].state.faults(FaultKind::WriteZero), 100);
    }

    #[test]
    fn rates_are_first_touches_per_second_by_kind_and_history_is_bounded() {
        let mut s = State::new(None);
        s.push(snapshot(1.0, vec![row(1, "a", 1 << 20, 0)]));
        s.push(snapshot(3.0, vec![row(1, "a", 1 << 20, 500)]));
        let h = s.history(1).cloned().unwrap_or_default();
        let last: Vec<Sample> = h.until(10.0).copied().collect();
        assert_eq!(last[0].rate, [0.0; FAULT_KINDS]);
        assert_eq!(last[1].rate[FaultKind::WriteZero as usize], 250.0);
        assert_eq!(last[1].touched_resident_kib, 2000);
        assert_eq!(last[1].reserved_kib, 1024);
        assert!(!h.kernel_resident());
        // A process first seen now touched its pages since the previous refresh.
        s.push(snapshot(
            4.0,
            vec![row(1, "a", 1 << 20, 500), row(2, "b", 1 << 20, 100)],
        ));
        let first = s.history(2).and_then(|h| h.until(10.0).next().copied());
        assert_eq!(
            first.map(|f| f.rate[FaultKind::WriteZero as usize]),
            Some(100.0)
        );
        for i in 0..HISTORY + 10 {
            s.push(snapshot(5.0 + i as f64, vec![row(1, "a", 1 << 20, 500)]));
        }
        assert_eq!(
            s.history(1).map(|h| h.until(f64::INFINITY).count()),
            Some(HISTORY)
        );
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let mut s = State::new(None);
        assert_eq!(s.key(press(KeyCode::Char('q'))), Action::Quit);
        assert!(s.quitting);
        assert_eq!(s.key(press(KeyCode::Esc)), Action::Quit);
        assert_eq!(
            s.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
        assert_eq!(s.key(press(KeyCode::Char('x'))), Action::None);
    }
}
