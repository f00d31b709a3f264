//! The view drawn on ratatui's TestBackend: what a person would read on the screen.

use ratatui::{Terminal, backend::TestBackend, crossterm::event};

use super::*;
use crate::tracer::{aggregate::RegionFaults, decode::MadeBy};

use super::super::state::tests::{row, snapshot};

/// The screen as text, one string per line.
fn screen(st: &State, w: u16, h: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("a test terminal");
    let mut ts = TableState::default();
    term.draw(|f| draw(f, st, &mut ts)).expect("draw");
    let buf = term.backend().buffer();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

/// Two processes; pid 10 has a live 16 MiB region fully written and an unmapped one.
fn two_demos() -> State {
    let mut st = State::new(Some("/tmp/cmd.out".into()));
    for (t, touched) in [(1.0, 1000), (2.0, 4096)] {
        let mut a = row(10, "demo", 16 << 20, touched);
        let mut faults = [0; FAULT_KINDS];
        faults[FaultKind::WriteZero as usize] = touched;
        a.state.by_region.insert(
            0x7f00_0000_0000,
            RegionFaults {
                len: 16 << 20,
                made_by: MadeBy::Fallback,
                faults,
            },
        );
        a.state
            .region_ids
            .insert(0x7f00_0000_0000, 0x7f00_0000_0000);
        a.state.past_regions.push((
            0x5000_0000,
            RegionFaults {
                len: 1 << 20,
                made_by: MadeBy::Mmap,
                faults: [3, 0, 0, 0, 0],
            },
        ));
        let b = row(20, "other", 8 << 20, 2048);
        st.push(snapshot(t, vec![a, b]));
    }
    st
}

#[test]
fn the_full_view_has_table_regions_chart_rates_and_keys() {
    let st = two_demos();
    let s = screen(&st, 160, 45);
    assert!(s[0].starts_with("tamalloc trace     2.0s"), "{}", s[0]);
    assert!(s[0].contains("command output: /tmp/cmd.out"), "{}", s[0]);
    assert!(has(&s, " processes (2), sort: PID "), "{s:#?}");
    for header in [
        "PID",
        "COMM",
        "RESERVED",
        "READ_ZERO",
        "WRITE_ZERO",
        "VmRSS",
        "OOM",
    ] {
        assert!(has(&s, header), "{header} missing: {s:#?}");
    }
    // The selected row, marked, with its counts.
    let selected = s.iter().find(|l| l.contains("> ")).expect("a selected row");
    assert!(
        selected.contains("     10 demo") && selected.contains("4096"),
        "{selected}"
    );
    assert!(has(&s, " pid 10 demo: regions 2 (1 live) "), "{s:#?}");
    let region = s
        .iter()
        .find(|l| l.contains("0x7f0000000000"))
        .expect("the live region");
    for cell in ["fallback", "16.0M", "100.0%", "4096", "live"] {
        assert!(region.contains(cell), "{cell} missing: {region}");
    }
    assert!(has(&s, "0x50000000") && has(&s, "gone"), "{s:#?}");
    assert!(
        has(&s, " MiB: reserved 16.0  resident 16.0  VmRSS 17.0 "),
        "{s:#?}"
    );
    assert!(has(&s, "write_zero    3.1k/s"), "{s:#?}");
    assert!(has(&s, "drops: 0 (fault events 0"), "{s:#?}");
    let keys = &s[44];
    assert!(
        keys.starts_with(" q quit  s sort  r reverse  p pause  Up/Down select  Ctrl-C stop"),
        "{keys}"
    );
}

#[test]
fn a_narrow_terminal_drops_rare_columns_and_keeps_the_keys() {
    let mut st = two_demos();
    st.key(event::KeyEvent::new(
        event::KeyCode::Down,
        event::KeyModifiers::NONE,
    ));
    let s = screen(&st, 100, 30);
    for header in ["PID", "COMM", "RESERVED", "WRITE_ZERO", "VmRSS"] {
        assert!(has(&s, header), "{header} missing: {s:#?}");
    }
    assert!(!has(&s, "OOM"), "{s:#?}");
    assert!(has(&s, " pid 20 other: regions 0 (0 live) "), "{s:#?}");
    assert!(s[29].starts_with(" q quit  s sort"), "{}", s[29]);
}

#[test]
fn paused_is_shown_and_p_becomes_resume() {
    let mut st = two_demos();
    st.key(event::KeyEvent::new(
        event::KeyCode::Char('p'),
        event::KeyModifiers::NONE,
    ));
    let s = screen(&st, 160, 45);
    assert!(s[0].contains(" PAUSED "), "{}", s[0]);
    assert!(s[44].contains(" p resume "), "{}", s[44]);
}

#[test]
fn columns_go_by_rank_from_the_right() {
    let cols = [
        col("A", 4, 0),
        col("B", 4, 2),
        col("C", 4, 1),
        col("D", 4, 2),
    ];
    assert_eq!(fit(&cols, 19), [0, 1, 2, 3]);
    assert_eq!(fit(&cols, 14), [0, 1, 2]);
    assert_eq!(fit(&cols, 9), [0, 2]);
    assert_eq!(fit(&cols, 1), [0]);
}

#[test]
fn rates_read_short() {
    assert_eq!(per_second(0.0), "0/s");
    assert_eq!(per_second(999.4), "999/s");
    assert_eq!(per_second(3096.0), "3.1k/s");
    assert_eq!(per_second(52_000.0), "52k/s");
    assert_eq!(per_second(2_500_000.0), "2.5M/s");
}
