//! The man pages of the three syscalls (`kernel-patch/man/man2/`): what the guest gets of
//! them, and the tests that keep them lint-clean, in step with the ABI, and their EXAMPLES
//! compiling against the uapi header of the patch series.
//!
//! The guest gets the pages in `/usr/share/man/man2/` and each page's EXAMPLES program,
//! built static against the kernel build's installed headers, as
//! `/usr/bin/NAME-example` (`tests/vm/manpages.sh` runs them).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::util;

/// Where the pages live in the workspace.
pub const DIR: &str = "kernel-patch/man/man2";
/// One page per syscall, named for it.
pub const PAGES: &[&str] = &[
    "tamalloc",
    "get_memory_usage_stats",
    "get_global_memory_usage_stats",
];
/// Where the guest has them.
pub const GUEST_DIR: &str = "/usr/share/man/man2";

/// (host path, guest path) of each page.
pub fn guest_pages() -> Vec<(PathBuf, String)> {
    let dir = util::workspace_root().join(DIR);
    PAGES
        .iter()
        .map(|name| {
            (
                dir.join(format!("{name}.2")),
                format!("{GUEST_DIR}/{name}.2"),
            )
        })
        .collect()
}

/// Each page's EXAMPLES program, compiled static into `out` against `include` (the patched
/// kernel's `headers_install` output), as (host binary, `/usr/bin/NAME-example`).
pub fn build_examples(include: &Path, out: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    for (page, _) in guest_pages() {
        let name = page_name(&page)?;
        let bin = out.join(format!("{name}-example"));
        compile_example(&page, include, &bin, &["-static", "-O2"])?;
        files.push((bin, format!("/usr/bin/{name}-example")));
    }
    Ok(files)
}

fn page_name(page: &Path) -> anyhow::Result<String> {
    page.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", page.display()))
}

/// Compiles the EXAMPLES program of `page` into `bin` with `-Wall -Wextra -Werror`.
fn compile_example(page: &Path, include: &Path, bin: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    let source = example_source(&text).with_context(|| {
        format!(
            "{}: no `.\\\" SRC BEGIN` ... `SRC END` block",
            page.display()
        )
    })?;
    let c = bin.with_extension("c");
    std::fs::write(&c, source).with_context(|| format!("writing {}", c.display()))?;
    util::run(
        Command::new("gcc")
            .args(["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror"])
            .args(extra)
            .arg("-I")
            .arg(include)
            .arg("-o")
            .arg(bin)
            .arg(&c),
    )
    .with_context(|| format!("compiling the EXAMPLES program of {}", page.display()))
}

/// The C program between `.\" SRC BEGIN` and `.\" SRC END` (the man-pages convention), with
/// the roff escapes it uses undone: `\&` lines, `\-`, `\e`.
fn example_source(page: &str) -> Option<String> {
    let start = page.find(".\\\" SRC BEGIN")?;
    let body = &page[start..];
    let end = body.find(".\\\" SRC END")?;
    let mut out = String::new();
    for line in body[..end].lines().skip(1) {
        if line == ".EX" || line == ".EE" {
            continue;
        }
        let line = if line == "\\&" { "" } else { line };
        out.push_str(&line.replace("\\-", "-").replace("\\e", "\\"));
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, fs};

    use anyhow::bail;

    use super::*;

    /// The patch series' directory: `kernel-patch/6.1/` once the series are split by kernel,
    /// `kernel-patch/` before.
    fn series_dir(root: &Path) -> anyhow::Result<PathBuf> {
        for dir in [root.join("kernel-patch/6.1"), root.join("kernel-patch")] {
            if dir.join("series").is_file() {
                return Ok(dir);
            }
        }
        bail!("no kernel-patch/6.1/series or kernel-patch/series")
    }

    /// `include/uapi/linux/tamalloc.h` as the series leaves it, written under `out`
    /// (`out/include/uapi/linux/tamalloc.h`): `git apply --include` of each patch in order.
    fn extract_uapi_header(root: &Path, out: &Path) -> anyhow::Result<PathBuf> {
        let dir = series_dir(root)?;
        let series = std::fs::read_to_string(dir.join("series"))?;
        std::fs::create_dir_all(out)?;
        for patch in series
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            util::run(
                Command::new("git")
                    .current_dir(out)
                    .args(["apply", "--include=include/uapi/linux/tamalloc.h"])
                    .arg(dir.join(patch)),
            )
            .with_context(|| format!("extracting the uapi header from {patch}"))?;
        }
        let header = out.join("include/uapi/linux/tamalloc.h");
        if !header.is_file() {
            bail!(
                "no patch of {} creates include/uapi/linux/tamalloc.h",
                dir.display()
            );
        }
        Ok(out.join("include/uapi"))
    }

    fn pages() -> Vec<(String, String)> {
        guest_pages()
            .into_iter()
            .map(|(path, _)| {
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                (page_name(&path).unwrap(), text)
            })
            .collect()
    }

    fn temp_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{what}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// `groff -man -ww -z` (all warnings, no output) for the terminal and for print: any
    /// warning fails. groff-base is in set-up's packages; mandoc is not installed.
    #[test]
    fn pages_lint_clean_with_groff() {
        for (path, _) in guest_pages() {
            for device in ["utf8", "ps"] {
                let out = Command::new("groff")
                    .args(["-man", "-ww", "-z", "-T", device])
                    .arg(&path)
                    .output()
                    .expect("groff (package groff-base, `cargo xtask setup`) runs");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success() && stderr.is_empty(),
                    "groff -T{device} on {}: {}{stderr}",
                    path.display(),
                    out.status
                );
            }
        }
    }

    /// Each page is NAME(2) for its syscall, with the man-pages(7) sections in order.
    #[test]
    fn pages_have_the_man_pages_sections() {
        const SECTIONS: &[&str] = &[
            "NAME",
            "LIBRARY",
            "SYNOPSIS",
            "DESCRIPTION",
            "RETURN VALUE",
            "ERRORS",
            "VERSIONS",
            "STANDARDS",
            "HISTORY",
            "NOTES",
            "EXAMPLES",
            "SEE ALSO",
        ];
        for (name, text) in pages() {
            let th = text.lines().find(|l| l.starts_with(".TH ")).unwrap_or("");
            assert!(th.starts_with(&format!(".TH {name} 2 ")), "{name}: {th}");
            let sections: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix(".SH "))
                .map(|s| s.trim_matches('"'))
                .collect();
            assert_eq!(sections, SECTIONS, "{name}");
            assert!(
                text.contains(&format!(".SH NAME\n{name} \\- ")),
                "{name}: NAME line"
            );
            assert!(
                text.contains(&format!("syscall(SYS_{name}")),
                "{name}: synopsis"
            );
        }
    }

    /// The numbers each page states (`#define` lines of the SYNOPSIS and the EXAMPLES) are
    /// the ABI's.
    #[test]
    fn page_numbers_are_the_abi_numbers() {
        use tamalloc_common::abi;
        let expected: BTreeMap<&str, i64> = [
            ("SYS_tamalloc", abi::SYS_TAMALLOC),
            (
                "SYS_get_memory_usage_stats",
                abi::SYS_GET_MEMORY_USAGE_STATS,
            ),
            (
                "SYS_get_global_memory_usage_stats",
                abi::SYS_GET_GLOBAL_MEMORY_USAGE_STATS,
            ),
            ("TAMALLOC_COMM_LEN", abi::TAMALLOC_COMM_LEN as i64),
            (
                "TAMALLOC_PROC_STATS_SIZE_VER0",
                abi::TAMALLOC_PROC_STATS_SIZE_VER0 as i64,
            ),
            (
                "TAMALLOC_GLOBAL_STATS_SIZE_VER0",
                abi::TAMALLOC_GLOBAL_STATS_SIZE_VER0 as i64,
            ),
        ]
        .into();
        let mut seen = BTreeMap::new();
        for (name, text) in pages() {
            for (macro_name, value) in defines(&text) {
                if let Some(want) = expected.get(macro_name.as_str()) {
                    assert_eq!(value, *want, "{name}: #define {macro_name}");
                    seen.insert(macro_name, name.clone());
                }
            }
            let number = expected[format!("SYS_{name}").as_str()];
            assert!(
                text.contains(&format!("the number is {number} on x86-64")),
                "{name}: the SYNOPSIS note gives the number"
            );
        }
        let missing: Vec<&&str> = expected
            .keys()
            .filter(|k| !seen.contains_key(**k))
            .collect();
        assert!(missing.is_empty(), "no page defines {missing:?}");
    }

    /// `#define NAME NUMBER` lines (roff `\-` undone), anywhere in the page.
    fn defines(text: &str) -> Vec<(String, i64)> {
        text.lines()
            .filter_map(|l| {
                let mut words = l.trim_start_matches([' ', '#']).split_whitespace();
                if !l.trim_start().starts_with('#') || words.next()? != "define" {
                    return None;
                }
                let name = words.next()?.to_owned();
                let value = words.next()?.parse().ok()?;
                Some((name, value))
            })
            .collect()
    }

    /// The structs of the SYNOPSIS have the fields of tamalloc-common's mirrors, in order.
    #[test]
    fn synopsis_structs_have_the_abi_fields() {
        let abi = include_str!("../../tamalloc-common/src/abi.rs");
        for (page, c_struct, rust_struct) in [
            ("get_memory_usage_stats", "tamalloc_proc_stats", "ProcStats"),
            (
                "get_global_memory_usage_stats",
                "tamalloc_global_stats",
                "GlobalStats",
            ),
        ] {
            let text = &pages().into_iter().find(|(n, _)| n == page).unwrap().1;
            let synopsis = section(text, "SYNOPSIS");
            let c_fields = block_fields(synopsis, &format!("struct {c_struct} {{"), "};", |l| {
                let last = l.trim().strip_suffix(';')?.split_whitespace().last()?;
                Some(last.split('[').next()?.to_owned())
            });
            let rust_fields =
                block_fields(abi, &format!("pub struct {rust_struct} {{"), "}", |l| {
                    let rest = l.trim().strip_prefix("pub ")?;
                    Some(rest.split(':').next()?.to_owned())
                });
            assert!(!rust_fields.is_empty(), "{rust_struct} not found in abi.rs");
            assert_eq!(c_fields, rust_fields, "{page}: struct {c_struct}");
        }
    }

    fn section<'a>(text: &'a str, name: &str) -> &'a str {
        let start = text.find(&format!(".SH {name}\n")).expect("section");
        let rest = &text[start + 1..];
        &rest[..rest.find("\n.SH ").unwrap_or(rest.len())]
    }

    fn block_fields(
        text: &str,
        open: &str,
        close: &str,
        field: impl Fn(&str) -> Option<String>,
    ) -> Vec<String> {
        let Some(start) = text.find(open) else {
            return Vec::new();
        };
        text[start + open.len()..]
            .lines()
            .skip(1)
            .take_while(|l| l.trim() != close)
            .filter_map(field)
            .collect()
    }

    /// Each EXAMPLES program compiles with `-Wall -Wextra -Werror` against the uapi header
    /// as the patch series makes it (the host has no patched headers, so the `SYS_` numbers
    /// come from the programs' fallbacks).
    #[test]
    fn examples_compile_against_the_series_uapi_header() {
        let root = util::workspace_root();
        let dir = temp_dir("manpage-examples");
        let include = extract_uapi_header(&root, &dir.join("tree")).unwrap();
        for (page, _) in guest_pages() {
            let bin = dir.join(page_name(&page).unwrap());
            compile_example(&page, &include, &bin, &[]).unwrap_or_else(|e| panic!("{e:#}"));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn example_source_undoes_roff_escapes() {
        let page = ".SS Program source\n.\\\" SRC BEGIN (x.c)\n.EX\nint a = \\-1;\n\\&\n\
                    puts(\"\\en\");\n.EE\n.\\\" SRC END\n";
        assert_eq!(
            example_source(page).unwrap(),
            "int a = -1;\n\nputs(\"\\n\");\n"
        );
    }
}
