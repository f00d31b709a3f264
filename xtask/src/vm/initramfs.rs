//! The initramfs for the VM: a gzip'd newc cpio with busybox, `/init`, the caller's files
//! (plus the shared libraries of dynamically linked ones), the syscalls' man pages in
//! `/usr/share/man/man2/` and an optional `/cmd` script.
//!
//! `/init` mounts proc, sysfs, devtmpfs, tracefs and a tmpfs on /tmp. With `/cmd` it runs
//! it, then prints `init: exit=N`, `init: kernel-warnings=N` (the count of
//! `BUG:|WARNING:|lockdep|KASAN|Call Trace` lines in the kernel log, which it then dumps)
//! and `init: success` or `init: failure`. Without `/cmd` it gives a shell on the console.
//! Either way it ends with `reboot -f`, which ends QEMU (`-no-reboot`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::{self, BufWriter, Write},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use flate2::{Compression, write::GzEncoder};

const BUSYBOX: &str = "/bin/busybox";

/// Applets `/init`, `/cmd` and the test scripts may rely on.
pub const REQUIRED_APPLETS: &[&str] = &[
    "sh", "mount", "mkdir", "cat", "grep", "ls", "ps", "echo", "poweroff", "reboot", "sleep",
    "dmesg", "unshare", "seq", "head", "tail", "wc", "cut", "awk", "sed", "timeout", "env", "kill",
    "true", "false", "test", "[", "setsid", "cttyhack", "basename", "tr", "sort",
];

/// The pattern `/init` counts in the kernel log after the command.
/// Lockdep and KASAN reports start with `WARNING:`/`BUG:` lines; a bare `lockdep` would also
/// match the debug kernel's boot banner ("RCU lockdep checking is enabled").
pub const WARNING_PATTERN: &str =
    "BUG:|WARNING:|KASAN:|Call Trace|lockdep is turned off|possible (recursive|circular) locking";

const INIT: &str = r#"#!/bin/sh
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t tmpfs tmpfs /tmp
if [ -f /cmd ]; then
	echo "init: running /cmd"
	cd /root
	sh /cmd </dev/null
	status=$?
	echo "init: exit=$status"
	warnings=$(dmesg | grep -cE '@WARNINGS@')
	echo "init: kernel-warnings=$warnings"
	if [ "$warnings" -gt 0 ]; then
		echo "init: ---- kernel log ----"
		dmesg
		echo "init: ---- end of kernel log ----"
	fi
	if [ "$status" -eq 0 ]; then echo "init: success"; else echo "init: failure"; fi
else
	echo "init: interactive shell; 'exit' or Ctrl-D ends the VM (Ctrl-A x kills QEMU)"
	cd /root
	setsid cttyhack sh -l
fi
sync
# QEMU runs with -no-reboot, so a reboot ends it; poweroff -f needs working ACPI, which
# tinyconfig without PCI lacks (the kernel would just halt).
reboot -f
"#;

/// What goes into one initramfs.
#[derive(Debug, Default, Clone)]
pub struct Initramfs {
    /// (host path, absolute guest path) of files to copy, with their libraries.
    files: Vec<(PathBuf, String)>,
    /// The shell script `/init` runs, if any.
    cmd: Option<String>,
}

impl Initramfs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies the host file `host` to `guest` (an absolute path), with its libraries.
    pub fn file(&mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> &mut Self {
        self.files.push((host.into(), guest.into()));
        self
    }

    /// Makes `/init` run `script` (a shell script) instead of giving a shell.
    pub fn command(&mut self, script: impl Into<String>) -> &mut Self {
        self.cmd = Some(script.into());
        self
    }

    /// Writes the gzip'd cpio to `out`.
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let gz = GzEncoder::new(BufWriter::new(file), Compression::fast());
        let mut cpio = CpioWriter::new(gz);
        self.write_entries(&mut cpio)
            .with_context(|| format!("writing {}", out.display()))?;
        let gz = cpio.finish()?;
        gz.finish()?.flush()?;
        Ok(())
    }

    fn write_entries<W: Write>(&self, cpio: &mut CpioWriter<W>) -> anyhow::Result<()> {
        for dir in [
            "/proc",
            "/sys",
            "/dev",
            "/root",
            "/etc",
            "/run",
            "/usr/sbin",
        ] {
            cpio.dir(dir, 0o755)?;
        }
        cpio.dir("/tmp", 0o1777)?;
        cpio.special("/dev/console", 0o020600, (5, 1))?;
        cpio.special("/dev/null", 0o020666, (1, 3))?;
        cpio.file(
            "/init",
            INIT.replace("@WARNINGS@", WARNING_PATTERN).as_bytes(),
            0o755,
        )?;
        cpio.file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
        write_busybox(cpio)?;
        // The syscalls' man pages (there is no man(1): busybox has none, nor any nroff).
        for (host, guest) in crate::manpages::guest_pages() {
            cpio.host_file(&host, &guest)?;
        }
        if let Some(cmd) = &self.cmd {
            cpio.file("/cmd", cmd.as_bytes(), 0o755)?;
        }
        self.write_files(cpio)
    }

    fn write_files<W: Write>(&self, cpio: &mut CpioWriter<W>) -> anyhow::Result<()> {
        let mut libs = BTreeSet::new();
        for (host, guest) in &self.files {
            cpio.host_file(host, guest)?;
            libs.extend(shared_libraries(host)?);
        }
        for lib in libs {
            let guest = lib.to_string_lossy().into_owned();
            cpio.host_file(&lib, &guest)?;
        }
        Ok(())
    }
}

fn write_busybox<W: Write>(cpio: &mut CpioWriter<W>) -> anyhow::Result<()> {
    cpio.host_file(Path::new(BUSYBOX), BUSYBOX)?;
    let listing = crate::util::output(Command::new(BUSYBOX).arg("--list-full"))?;
    let applets = applet_paths(&listing);
    let missing: Vec<&str> = REQUIRED_APPLETS
        .iter()
        .copied()
        .filter(|a| !applets.contains_key(*a))
        .collect();
    if !missing.is_empty() {
        bail!("{BUSYBOX} lacks applets: {}", missing.join(" "));
    }
    for path in applets.values() {
        if path != BUSYBOX {
            cpio.symlink(path, BUSYBOX)?;
        }
    }
    Ok(())
}

/// Applet name → absolute guest path, from `busybox --list-full`.
fn applet_paths(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let name = l.rsplit('/').next()?;
            Some((name.to_owned(), format!("/{}", l.trim_start_matches('/'))))
        })
        .collect()
}

/// The shared libraries (and ELF interpreter) of `binary`, per the host's `ldd`; none for
/// static binaries and scripts.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // Resolve as the guest will, which has no LD_LIBRARY_PATH (`cargo run` sets one).
    let out = Command::new("ldd")
        .arg(binary)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .with_context(|| format!("running ldd {}", binary.display()))?;
    if !out.status.success() {
        // "not a dynamic executable": nothing to add.
        return Ok(Vec::new());
    }
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

/// Absolute paths in `ldd` output: `name => /path (addr)` and `/path (addr)` lines.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let target = match line.split_once("=>") {
                Some((_, rhs)) => rhs,
                None => line,
            };
            let path = target.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Writes the newc ("070701") cpio format, creating parent directories as needed.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        if !self.dirs.insert(name.clone()) {
            return Ok(());
        }
        self.entry(&name, 0o040000 | mode, 2, (0, 0), &[])
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        self.entry(&name, 0o100000 | (mode & 0o7777), 1, (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        self.entry(&name, 0o120777, 1, (0, 0), target.as_bytes())
    }

    /// A device node: `mode` includes the file type bits.
    pub fn special(&mut self, path: &str, mode: u32, rdev: (u32, u32)) -> io::Result<()> {
        let name = normalize(path)?;
        self.parents(&name)?;
        self.entry(&name, mode, 1, rdev, &[])
    }

    /// Copies a host file (following symlinks), keeping its permission bits.
    pub fn host_file(&mut self, host: &Path, guest: &str) -> anyhow::Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = fs::metadata(host)
            .with_context(|| format!("stat {}", host.display()))?
            .permissions()
            .mode();
        self.file(guest, &data, mode)
            .with_context(|| format!("adding {} as {guest}", host.display()))
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }

    fn parents(&mut self, name: &str) -> io::Result<()> {
        let mut prefix = String::new();
        let components: Vec<&str> = name.split('/').collect();
        for part in &components[..components.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.dirs.insert(prefix.clone()) {
                let dir = prefix.clone();
                self.entry(&dir, 0o040755, 2, (0, 0), &[])?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name} is too large for newc")))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible
            size,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut header = String::from("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
}

/// `"/a/b/"` → `"a/b"`; rejects empty paths and `..`.
fn normalize(path: &str) -> io::Result<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(io::Error::other(format!("bad guest path {path:?}")));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tlibmissing.so => not found\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn applets_are_mapped_to_paths() {
        let map = applet_paths("bin/sh\nusr/bin/[\nsbin/poweroff\n\n");
        assert_eq!(map["sh"], "/bin/sh");
        assert_eq!(map["["], "/usr/bin/[");
        assert_eq!(map["poweroff"], "/sbin/poweroff");
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("/usr//bin/x/").unwrap(), "usr/bin/x");
        assert!(normalize("/").is_err());
        assert!(normalize("/a/../b").is_err());
    }

    /// Round trip through the system's `cpio -it` / `cpio -i`.
    #[test]
    fn cpio_round_trip() {
        let mut cpio = CpioWriter::new(Vec::new());
        cpio.dir("/etc", 0o755).unwrap();
        cpio.file("/etc/hello", b"hello world\n", 0o644).unwrap();
        cpio.file("/usr/bin/odd", b"12345", 0o755).unwrap();
        cpio.symlink("/bin/sh", "/bin/busybox").unwrap();
        cpio.file("/empty", b"", 0o600).unwrap();
        let archive = cpio.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);

        let dir = std::env::temp_dir().join(format!("xtask-cpio-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let listing = cpio_cmd(&dir, &["-it"], &archive);
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/hello",
                "usr",
                "usr/bin",
                "usr/bin/odd",
                "bin",
                "bin/sh",
                "empty"
            ]
        );
        cpio_cmd(&dir, &["-id", "--quiet"], &archive);
        assert_eq!(fs::read(dir.join("etc/hello")).unwrap(), b"hello world\n");
        assert_eq!(fs::read(dir.join("usr/bin/odd")).unwrap(), b"12345");
        assert_eq!(
            fs::read_link(dir.join("bin/sh")).unwrap(),
            PathBuf::from("/bin/busybox")
        );
        let mode = fs::metadata(dir.join("usr/bin/odd"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        fs::remove_dir_all(&dir).unwrap();
    }

    fn cpio_cmd(dir: &Path, args: &[&str], input: &[u8]) -> String {
        use std::process::Stdio;
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio is installed");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
