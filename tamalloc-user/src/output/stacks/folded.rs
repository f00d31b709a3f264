//! Folded stacks (Brendan Gregg's `stackcollapse` format, which `flamegraph.pl`, inferno and
//! speedscope read): one line per call path and kind, root first, then the count:
//!
//! ```text
//! prog;main;fill;[write_zero] 7
//! prog;main;load;read;ksys_read_[k];clear_user_[k];[write_zero] 2
//! ```
//!
//! The command is the root; the kind is the last pseudo-frame, so one graph shows where each
//! kind came from; kernel frames end in `_[k]`, as `perf script | stackcollapse-perf.pl
//! --kernel` and inferno mark them. Counts are pages. Processes and regions of one command
//! add up (pprof keeps them apart as labels).

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use tamalloc_common::trace::FaultKind;

use super::StackSet;
use crate::tracer::record::StackFrame;

/// The folded lines with their pages, sorted (the same stacks give the same lines).
pub fn lines(set: &StackSet) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in set.iter() {
        let mut path = frame_name(&s.comm);
        if !s.frames.is_empty() {
            path.push(';');
            path.push_str(&frames(&s.frames));
        }
        for (k, n) in FaultKind::ALL.iter().zip(s.pages) {
            if n == 0 {
                continue;
            }
            let sum = out.entry(format!("{path};[{}]", k.name())).or_insert(0u64);
            *sum = sum.saturating_add(n);
        }
    }
    out
}

/// Writes [`lines`], one `STACK PAGES` line each.
pub fn write(set: &StackSet, out: &mut impl Write) -> io::Result<()> {
    for (path, n) in lines(set) {
        writeln!(out, "{path} {n}")?;
    }
    Ok(())
}

/// `frames` (leaf first, as in a record) root first, joined by `;`, kernel frames marked.
pub fn frames(frames: &[StackFrame]) -> String {
    let names: Vec<String> = frames
        .iter()
        .rev()
        .map(|f| {
            let name = frame_name(&f.label());
            if f.kernel { name + "_[k]" } else { name }
        })
        .collect();
    names.join(";")
}

/// `name` as one frame: `;` separates frames and a line ends the stack, so neither may
/// appear in one (C++ and Rust names have spaces, which the format allows: the count is
/// after the last one).
fn frame_name(name: &str) -> String {
    let name = name.replace(';', ":").replace(['\n', '\r'], " ");
    if name.is_empty() { "?".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::{super::tests::sample, *};

    #[test]
    fn one_line_per_call_path_and_kind_root_first() {
        let set: StackSet = sample().into_iter().collect();
        let mut buf = Vec::new();
        write(&set, &mut buf).expect("write");
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "prog;main;fill;[cow] 1\n\
             prog;main;fill;[read_zero] 1\n\
             prog;main;fill;[write_zero] 7\n\
             prog;main;load;libc.so.6+0x1234;ksys_read_[k];clear_user_[k];[write_zero] 2\n\
             prog;main;scan;[read_zero] 5\n"
        );
    }

    #[test]
    fn separators_in_names_do_not_split_frames() {
        assert_eq!(frame_name("a;b\nc"), "a:b c");
        assert_eq!(
            frame_name("std::vector<int, A>::push"),
            "std::vector<int, A>::push"
        );
        assert_eq!(frame_name(""), "?");
    }
}
