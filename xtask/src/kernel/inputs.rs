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
    /// Reads `dir/<version>/series` and its patches, and the fragments: `dir/tamalloc.config`,
    /// then `dir/<version>/tamalloc.config` if there is one, and with `debug` the same for
    /// `debug.config`. Each fragment is named by its path under `dir`.
    pub fn gather(dir: &Path, version: &str, tarball: &Path, debug: bool) -> anyhow::Result<Self> {
        let tarball_key = tarball_key(tarball)?;
        let series_dir = dir.join(version);
        let series_path = series_dir.join("series");
        let series = match fs::read_to_string(&series_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", series_path.display())),
        };
        let patches = read_all(&series_dir, parse_series(&series))?;
        let mut fragment_names = Vec::new();
        for name in ["tamalloc.config"]
            .into_iter()
            .chain(debug.then_some("debug.config"))
        {
            fragment_names.push(name.to_owned());
            let own = format!("{version}/{name}");
            if dir.join(&own).is_file() {
                fragment_names.push(own);
            }
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
    let meta =
        fs::metadata(tarball).with_context(|| format!("kernel source {}", tarball.display()))?;
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
        let gather = |version, debug| Inputs::gather(&dir, version, &tarball, debug);
        let plain = gather("6.1", false).unwrap();
        let debug = gather("6.1", true).unwrap();
        assert_ne!(plain.hash, debug.hash);
        assert!(plain.patches.is_empty());
        fs::create_dir_all(dir.join("6.1")).unwrap();
        fs::write(dir.join("6.1/series"), "0001-x.patch\n").unwrap();
        assert!(gather("6.1", false).is_err());
        fs::write(dir.join("6.1/0001-x.patch"), "diff").unwrap();
        let patched = gather("6.1", false).unwrap();
        assert_ne!(plain.hash, patched.hash);
        assert_eq!(
            patched.patches,
            [("0001-x.patch".to_owned(), b"diff".to_vec())]
        );
        // Another version's series and fragments are not this one's.
        assert_eq!(gather("6.12", false).unwrap().hash, plain.hash);
        fs::create_dir_all(dir.join("6.12")).unwrap();
        fs::write(dir.join("6.12/debug.config"), "CONFIG_C=y\n").unwrap();
        assert_eq!(gather("6.12", false).unwrap().hash, plain.hash);
        let own = gather("6.12", true).unwrap();
        assert_ne!(own.hash, debug.hash);
        let names: Vec<&str> = own.fragments.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["tamalloc.config", "debug.config", "6.12/debug.config"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
