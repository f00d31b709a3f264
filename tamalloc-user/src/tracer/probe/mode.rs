//! Which fault programs the probe attaches, chosen at load from what the running kernel
//! offers: kernel mode needs BTF (for the attach points and the offsets of the fields the
//! programs read) and every hooked function; attaching then tells whether fexit works.

use std::{fmt, str::FromStr};

use aya::Btf;
use tamalloc_common::maps::{KERNEL_HOOKS, KernelLayout, VMF_WINDOW};

use super::btf::KernelBtf;
use crate::tracer::TraceError;

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Selects the mode when the caller leaves it to [`ModeChoice::Auto`].
pub const MODE_ENV: &str = "TAMALLOC_TRACE_MODE";

/// The fault programs attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// fexit on the kernel functions that install pages: counts what the kernel did.
    Kernel,
    /// `exceptions:page_fault_*` and the tracer's own page state (kernels without BTF or
    /// fexit).
    Tracepoint,
}

impl Mode {
    /// `kernel` or `tracepoint`, as the header and the `meta` record say it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeChoice {
    /// Kernel mode where the kernel offers it, else tracepoint mode (with a note).
    #[default]
    Auto,
    /// Kernel mode or an error saying what the kernel lacks.
    Kernel,
    /// Tracepoint mode, whatever the kernel offers.
    Tracepoint,
}

impl FromStr for ModeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "kernel" => Ok(Self::Kernel),
            "tracepoint" => Ok(Self::Tracepoint),
            _ => Err(format!(
                "unknown tracer mode {s:?}: use auto, kernel or tracepoint"
            )),
        }
    }
}

impl ModeChoice {
    /// `self`, or for `Auto` what `$TAMALLOC_TRACE_MODE` says when it is set.
    pub fn or_env(self) -> Result<Self, TraceError> {
        match (self, std::env::var(MODE_ENV)) {
            (Self::Auto, Ok(v)) if !v.is_empty() => v
                .parse()
                .map_err(|e| TraceError::Usage(format!("{MODE_ENV}: {e}"))),
            (c, _) => Ok(c),
        }
    }
}

/// What kernel mode needs from this kernel: the programs' layout global, and the kernel's
/// BTF for the attach points. `Err` says, in a few words, what is missing.
pub(super) fn kernel_layout(stream: bool) -> Result<(KernelLayout, Btf), String> {
    // Before reading 5 MB of BTF: a kernel that refuses fexit programs by policy (a
    // sandbox's BPF LSM, CAP_PERFMON missing) does so before it looks at the attach point,
    // so a program naming type id 1 gets the same EPERM there; elsewhere it fails
    // verification (id 1 is no function) and the real probe below decides.
    if let Err(e) = fexit_loads(1)
        && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    {
        return Err(format!(
            "this kernel refuses fexit programs (a minimal one: {e})"
        ));
    }
    let raw = std::fs::read(VMLINUX_BTF)
        .map_err(|e| format!("no kernel BTF ({VMLINUX_BTF}: {e}; needs CONFIG_DEBUG_INFO_BTF)"))?;
    let btf = KernelBtf::parse(&raw).map_err(|e| e.to_string())?;
    // First whether fexit loads at all: some kernels refuse fexit programs whatever their
    // configuration says (a sandbox's policy, lockdown), and then nothing else here is
    // worth its time (aya parses the whole BTF again: tens of ms).
    let (_, first, _) = KERNEL_HOOKS[0];
    let id = btf
        .function_id(first)
        .ok_or_else(|| format!("the kernel has no function {first} to hook"))?;
    fexit_loads(id).map_err(|e| {
        format!("this kernel refuses fexit programs (a minimal one on {first}: {e})")
    })?;
    let functions = btf.functions();
    if let Some((_, f, _)) = KERNEL_HOOKS.iter().find(|(_, f, _)| !functions.contains(f)) {
        return Err(format!("the kernel has no function {f} to hook"));
    }
    let field = |name: &str, size: u32| -> Result<u32, String> {
        let off = btf
            .field_offset("vm_fault", name)
            .map_err(|e| e.to_string())?;
        if off + size > VMF_WINDOW || off % 4 != 0 {
            return Err(format!("vm_fault.{name} is at offset {off}, out of reach"));
        }
        Ok(off)
    };
    let layout = KernelLayout {
        vmf_address: field("address", 8)?,
        vmf_flags: field("flags", 4)?,
        vmf_orig_pte: field("orig_pte", 8)?,
        stream: u32::from(stream),
    };
    let aya_btf = Btf::parse(&raw, aya::Endianness::default()).map_err(|e| e.to_string())?;
    Ok((layout, aya_btf))
}

/// Whether the kernel loads a minimal fexit program (`r0 = 0; exit`) on BTF type `btf_id`
/// of vmlinux; the program is closed at once.
fn fexit_loads(btf_id: u32) -> std::io::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FEXIT: u32 = 25;
    // mov r0, 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD's part: the fields up to attach_btf_id.
    let mut attr = [0u8; 128];
    let mut put = |off: usize, bytes: &[u8]| attr[off..off + bytes.len()].copy_from_slice(bytes);
    put(0, &BPF_PROG_TYPE_TRACING.to_ne_bytes());
    put(4, &(insns.len() as u32).to_ne_bytes());
    put(8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(16, &(license.as_ptr() as u64).to_ne_bytes());
    put(68, &BPF_TRACE_FEXIT.to_ne_bytes());
    put(108, &btf_id.to_ne_bytes());
    // SAFETY: `attr` is a valid bpf_attr for BPF_PROG_LOAD whose pointers (`insns`,
    // `license`) outlive the call; the kernel only reads it.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave us, closed once.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// One line saying why attaching kernel mode's programs failed (a verifier log would be
/// pages long; the first line of the kernel's answer says what a user can act on).
pub(super) fn refusal(e: &TraceError) -> String {
    let source = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let first = source.lines().next().unwrap_or("").trim();
    // aya's load error reads "the BPF_PROG_LOAD syscall returned <errno>. Verifier ...".
    let first = first.split(". Verifier output").next().unwrap_or(first);
    format!("this kernel refuses the fexit/fentry programs ({e}: {first})")
}
