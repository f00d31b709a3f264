//! What a kernel build depends on, read once and hashed: what is hashed is what is built.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

/// Bump when the way a kernel is built changes, so that old artefacts are not reused.
pub const HARNESS_VERSION: &str = "tamalloc-kernel-harness-1";

/// Everything a build depends on, read once: what is hashed is what is built.
#[derive(Debug)]
pub struct Inputs {
    pub tarball: PathBuf,
    pub tarball_key: String,
    /// (file name, contents) of each patch, in series order.
    pub patches: Vec<(String, Vec<u8>)>,
    /// (file name, contents) of each config fragment, in merge order.
    pub fragments: Vec<(String, Vec<u8>)>,
    pub hash: String,
}

impl Inputs {
    pub fn gather(dir: &Path, tarball: &Path, debug: bool) -> anyhow::Result<Self> {
        let tarball_key = tarball_key(tarball)?;
        let series_path = dir.join("series");
        let series = match fs::read_to_string(&series_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", series_path.display())),
        };
        let patches = read_all(dir, parse_series(&series))?;
        let mut fragment_names = vec!["tamalloc.config".to_owned()];
        if debug {
            fragment_names.push("debug.config".to_owned());
        }
        let fragments = read_all(dir, fragment_names)?;
        let mut parts = vec![
            ("tarball".to_owned(), tarball_key.clone().into_bytes()),
            ("series".to_owned(), series.into_bytes()),
        ];
        parts.extend(patches.iter().chain(&fragments).cloned());
        let hash = hash_inputs(HARNESS_VERSION, &parts);
        Ok(Self {
            tarball: tarball.to_owned(),
            tarball_key,
            patches,
            fragments,
            hash,
        })
    }
}

fn read_all(dir: &Path, names: Vec<String>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((name, data))
        })
        .collect()
}

pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The patch file names of a quilt-style `series` (comments, blank lines and options dropped).
fn parse_series(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A hex sha256 over the version and every (name, content) pair, each length-prefixed so
/// that moving bytes between parts changes the hash.
fn hash_inputs(version: &str, parts: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    feed(version.as_bytes());
    for (name, data) in parts {
        feed(name.as_bytes());
        feed(data);
    }
    hex::encode(h.finalize())[..16].to_owned()
}

/// Identifies the tarball cheaply (name, size, mtime) without reading 140 MB.
fn tarball_key(tarball: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(tarball).with_context(|| {
        format!(
            "kernel source {} (install linux-source-6.1)",
            tarball.display()
        )
    })?;
    let stem = file_name(tarball)
        .trim_end_matches(".xz")
        .trim_end_matches(".tar")
        .to_owned();
    Ok(format!("{stem}-{}-{}", meta.size(), meta.mtime()))
}
#[cfg(test)]
mod tests {
    use super::*;

    fn parts(items: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        items
            .iter()
            .map(|(n, d)| ((*n).to_owned(), d.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = hash_inputs("v1", &parts(&[("series", "0001-a.patch\n"), ("x", "abc")]));
        assert_eq!(
            a,
            hash_inputs("v1", &parts(&[("series", "0001-a.patch\n"), ("x", "abc")]))
        );
        assert_eq!(a.len(), 16);
        assert_ne!(
            a,
            hash_inputs("v2", &parts(&[("series", "0001-a.patch\n"), ("x", "abc")]))
        );
        assert_ne!(
            a,
            hash_inputs("v1", &parts(&[("series", "0001-a.patch\n"), ("x", "abd")]))
        );
        // Moving a byte from one part to the next must change the hash.
        assert_ne!(
            hash_inputs("v1", &parts(&[("a", "xy"), ("b", "z")])),
            hash_inputs("v1", &parts(&[("a", "x"), ("b", "yz")]))
        );
    }

    #[test]
    fn series_parsing() {
        let text = "# comment\n0001-a.patch\n\n  0002-b.patch -p1\n0003-c.patch # why\n";
        assert_eq!(
            parse_series(text),
            ["0001-a.patch", "0002-b.patch", "0003-c.patch"]
        );
        assert!(parse_series("").is_empty());
    }

    #[test]
    fn gather_keys_on_debug_and_patches() {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tamalloc.config"), "CONFIG_A=y\n").unwrap();
        fs::write(dir.join("debug.config"), "CONFIG_B=y\n").unwrap();
        let tarball = dir.join("linux.tar.xz");
        fs::write(&tarball, "not really").unwrap();
        let plain = Inputs::gather(&dir, &tarball, false).unwrap();
        let debug = Inputs::gather(&dir, &tarball, true).unwrap();
        assert_ne!(plain.hash, debug.hash);
        assert!(plain.patches.is_empty());
        fs::write(dir.join("series"), "0001-x.patch\n").unwrap();
        assert!(Inputs::gather(&dir, &tarball, false).is_err());
        fs::write(dir.join("0001-x.patch"), "diff").unwrap();
        let patched = Inputs::gather(&dir, &tarball, false).unwrap();
        assert_ne!(plain.hash, patched.hash);
        assert_eq!(
            patched.patches,
            [("0001-x.patch".to_owned(), b"diff".to_vec())]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
