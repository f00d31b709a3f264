//! A flame graph SVG of the folded stacks ([`super::folded`]), drawn by `inferno` (the Rust
//! port of `flamegraph.pl`): a frame's width is the pages first touched under it, the kind is
//! the top frame, kernel frames are orange. Hovering a frame shows its pages (its
//! `<title>`); clicking zooms, as in any flame graph.

use std::io::{self, Write};

use inferno::flamegraph::{
    self, Options,
    color::{MultiPalette, Palette},
};
use tamalloc_common::trace::PAGE_SIZE;

use super::{StackSet, folded};

pub const TITLE: &str = "Pages first touched";

/// Writes the flame graph of `set`; a set with no stacks gives a picture that says so (inferno
/// refuses to draw nothing).
pub fn write(set: &StackSet, out: &mut impl Write) -> io::Result<()> {
    let lines: Vec<String> = folded::lines(set)
        .into_iter()
        .map(|(path, n)| format!("{path} {n}"))
        .collect();
    if lines.is_empty() {
        return write!(
            out,
            r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg"><text x="300" y="34" text-anchor="middle" font-family="Verdana" font-size="14">{TITLE}: no first touch had a stack</text></svg>
"#
        );
    }
    let mut opts = Options::default();
    opts.title = TITLE.into();
    opts.subtitle = Some(format!(
        "by call path; the top frame is the kind of first touch; a page is {} KiB",
        PAGE_SIZE / 1024
    ));
    opts.count_name = "pages".into();
    // perf's flame graphs' colours (flamegraph.pl --colors=java): kernel frames (`_[k]`,
    // which the picture does not print) orange, C++ yellow, the rest red; hashed from the
    // names, so a function keeps its colour from one run to the next.
    opts.colors = Palette::Multi(MultiPalette::Java);
    opts.hash = true;
    opts.deterministic = true;
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{super::tests::sample, *};

    /// Every frame box of the SVG: its `<title>` (name and pages) and its colour.
    fn boxes(svg: &str) -> Vec<(String, String)> {
        // inferno's SVG starts with the SVG 1.1 DOCTYPE.
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(svg, opts).expect("the SVG is XML");
        doc.descendants()
            .filter(|g| g.has_tag_name("g"))
            .filter_map(|g| {
                let child = |tag| g.children().find(|c| c.has_tag_name(tag));
                let title = child("title")?.text()?.to_owned();
                let fill = child("rect")?.attribute("fill")?.to_owned();
                Some((title, fill))
            })
            .collect()
    }

    #[test]
    fn every_frame_appears_with_its_pages() {
        let set: StackSet = sample().into_iter().collect();
        let mut buf = Vec::new();
        write(&set, &mut buf).expect("draw");
        let svg = String::from_utf8(buf).expect("UTF-8");
        assert!(svg.contains(TITLE), "the title");
        // inferno's titles: `NAME (N pages, P%)`, one per frame box (summed here over the
        // boxes of one name), the `_[k]` of kernel frames left out.
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        let boxes = boxes(&svg);
        for (t, _) in &boxes {
            let Some((name, rest)) = t.rsplit_once(" (") else {
                continue;
            };
            let Some(n) = rest
                .split(' ')
                .next()
                .and_then(|n| n.replace(',', "").parse::<u64>().ok())
            else {
                continue;
            };
            *got.entry(name.to_owned()).or_default() += n;
        }
        let want: BTreeMap<String, u64> = [
            ("all", 16),
            ("prog", 16),
            ("main", 16),
            ("fill", 9),
            ("scan", 5),
            ("load", 2),
            ("libc.so.6+0x1234", 2),
            ("ksys_read", 2),
            ("clear_user", 2),
            // Per kind: fill's cow 1, read_zero 1 + scan's 5, write_zero 7 + load's 2.
            ("[cow]", 1),
            ("[read_zero]", 6),
            ("[write_zero]", 9),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want, "{svg}");
        // Kernel frames orange (no blue), user frames not.
        for (t, fill) in &boxes {
            let kernel = t.starts_with("clear_user") || t.starts_with("ksys_read");
            assert_eq!(fill.ends_with(",0)"), kernel, "{t}: {fill}");
        }
    }

    #[test]
    fn no_stacks_is_still_a_picture() {
        let mut buf = Vec::new();
        write(&StackSet::default(), &mut buf).expect("draw");
        let svg = String::from_utf8(buf).expect("UTF-8");
        let doc = roxmltree::Document::parse(&svg).expect("XML");
        assert!(
            doc.descendants().any(|n| n.has_tag_name("text")
                && n.text()
                    .is_some_and(|t| t.contains("no first touch had a stack"))),
            "{svg}"
        );
    }
}
