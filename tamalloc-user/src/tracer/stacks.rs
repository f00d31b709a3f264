//! ④ `--stacks`: the kernel's stack counts (`STACK_COUNTS`) → `stack` records with
//! symbolized frames.
//!
//! Addresses mean something only in their process's address space, so each new stack is
//! *normalized* (address → object file, build ID, file offset) while its process still
//! runs, at the refresh after it appears (blazesym reads `/proc/PID/maps`). A process that
//! exited before that still resolves: the programs took each new stack a second time with
//! build IDs (`BUILD_ID_STACKS`: build ID + file offset per frame), and the build ID names
//! the file through every object seen in any normalized process (or this one), or through
//! `/usr/lib/debug/.build-id`. Symbols are read at the end, per object file, by file offset
//! (ELF symbols, DWARF lines), and kernel frames from kallsyms. What did not resolve is
//! kept as an address and counted ([`Symbolized::unresolved`]).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use blazesym::{
    Pid,
    normalize::{NormalizeOpts, Normalizer, UserMeta},
    symbolize::{Input, Symbolized as Sym, Symbolizer, source},
};
use tamalloc_common::{
    maps::{BUILD_ID_VALID, NO_STACK, StackCount, StackKey},
    trace::{FAULT_KINDS, FaultKind},
};

use super::{
    Probe, TraceError,
    record::{Record, StackFrame},
};

/// A user frame as it was normalized.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct UserFrame {
    addr: u64,
    /// The object file and the offset in it, when known.
    module: Option<PathBuf>,
    build_id: Option<Vec<u8>>,
    file_offset: Option<u64>,
    /// A caller's frame: `addr` is a return address, the instruction after the call.
    caller: bool,
}

impl UserFrame {
    /// Where its symbol and line are looked up: a caller at the call itself, not the
    /// instruction after it (which may be the next line, or the next function after a
    /// call that does not return).
    fn lookup(&self) -> Option<(&PathBuf, u64)> {
        let off = self.file_offset?.saturating_sub(u64::from(self.caller));
        Some((self.module.as_ref()?, off))
    }
}

/// A stack as it will be written: kernel frames (leaf first), then user frames (leaf
/// first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RawStack {
    kernel: Vec<u64>,
    user: Vec<UserFrame>,
}

/// What the trace's stacks were attributed to, with what did not resolve.
#[derive(Debug, Default)]
pub struct Symbolized {
    pub records: Vec<Record>,
    /// Frames left as bare addresses (no object file, or no symbol in it).
    pub unresolved: u64,
    pub frames: u64,
}

/// Every stack key seen so far and its normalized frames.
pub struct StackTable {
    normalizer: Normalizer,
    /// Normalized stacks by key (pages are read again at the end).
    stacks: HashMap<StackKey, RawStack>,
    /// Build ID (zero-padded as the kernel writes it) → the object file that has it, from
    /// every normalized process.
    objects: HashMap<[u8; 20], (Vec<u8>, PathBuf)>,
    /// Images (pid, instance) whose objects are learnt: an exec or a reused pid is a new
    /// instance, learnt again.
    learnt: std::collections::HashSet<(u32, u32)>,
    /// Their names, as last read.
    names: HashMap<u32, String>,
    /// The name of each image (pid, instance) while it ran: a pid that execs changes both.
    image_names: HashMap<(u32, u32), String>,
}

impl Default for StackTable {
    fn default() -> Self {
        Self::new()
    }
}

impl StackTable {
    pub fn new() -> Self {
        let mut t = Self {
            normalizer: Normalizer::builder().enable_build_ids(true).build(),
            stacks: HashMap::new(),
            objects: HashMap::new(),
            learnt: Default::default(),
            names: HashMap::new(),
            image_names: HashMap::new(),
        };
        // The tracer's own libraries (libc, ld.so) are most programs' too.
        t.learn_objects(Pid::Slf);
        t
    }

    /// Normalizes the stacks that appeared since the last call, while their processes
    /// still run.
    pub fn refresh(&mut self, probe: &Probe) -> Result<(), TraceError> {
        for (key, count) in probe.stack_counts()? {
            if !self.stacks.contains_key(&key) {
                let stack = self.normalize(probe, &key, &count)?;
                self.stacks.insert(key, stack);
            }
        }
        Ok(())
    }

    fn normalize(
        &mut self,
        probe: &Probe,
        key: &StackKey,
        count: &StackCount,
    ) -> Result<RawStack, TraceError> {
        let addrs = probe.stack_addrs(key.user)?;
        let kernel = if key.kernel == NO_STACK {
            Vec::new()
        } else {
            probe.stack_addrs(key.kernel)?
        };
        let mut user: Vec<UserFrame> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| UserFrame {
                addr,
                // The first is the faulting instruction itself.
                caller: i > 0,
                ..UserFrame::default()
            })
            .collect();
        // First choice: the live process's maps, if it still runs the image the stack was
        // taken in.
        let opts = NormalizeOpts {
            sorted_addrs: false,
            ..NormalizeOpts::default()
        };
        let same_image = probe.instance(key.tgid)? == key.inst;
        if same_image
            && let Ok(out) =
                self.normalizer
                    .normalize_user_addrs_opts(Pid::from(key.tgid), &addrs, &opts)
        {
            for (f, (offset, meta)) in user.iter_mut().zip(&out.outputs) {
                if let Some(UserMeta::Elf(elf)) = out.meta.get(*meta) {
                    f.module = Some(elf.path.clone());
                    f.build_id = elf.build_id.as_ref().map(|b| b.to_vec());
                    f.file_offset = Some(*offset);
                    if let Some(b) = &f.build_id {
                        self.objects
                            .entry(padded(b))
                            .or_insert_with(|| (b.clone(), elf.path.clone()));
                    }
                }
            }
        }
        // Then the build IDs the programs took at the fault (the process may be gone). They
        // win over maps read since: a library unloaded and another mapped in its place
        // since the fault keeps its own frames.
        if count.build != NO_STACK {
            for (f, b) in user.iter_mut().zip(probe.build_id_stack(count.build)?) {
                if b.status != BUILD_ID_VALID {
                    continue;
                }
                let (id, module) = self.object_of(&b.build_id);
                if f.build_id.as_deref().map(padded) != Some(b.build_id) {
                    f.module = module;
                    f.build_id = Some(id);
                    f.file_offset = Some(b.offset_or_ip);
                }
            }
        }
        Ok(RawStack { kernel, user })
    }

    /// Learns the objects process `pid` maps, and its name, once per image (`inst`, its
    /// instance now): called when it is first seen (its first region) and after each exec,
    /// so that its stacks resolve by build ID if it exits before the next refresh.
    pub fn learn_process(&mut self, pid: u32, inst: u32) {
        if !self.learnt.insert((pid, inst)) {
            return;
        }
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            let comm = comm.trim_end().to_owned();
            self.image_names.insert((pid, inst), comm.clone());
            self.names.insert(pid, comm);
        }
        self.learn_objects(Pid::from(pid));
    }

    /// The followed command, `pid`, will run `program`: learnt before it runs, for a
    /// command that ends before any refresh.
    pub fn learn_command(&mut self, pid: u32, program: &std::path::Path) {
        if let Ok(Some(id)) = blazesym::helper::read_elf_build_id(&program) {
            let path = program
                .canonicalize()
                .unwrap_or_else(|_| program.to_owned());
            self.objects
                .entry(padded(&id))
                .or_insert_with(|| (id.to_vec(), path));
        }
        // The kernel's comm: the file name, 15 bytes at most.
        if let Some(name) = program.file_name() {
            let name: String = name.to_string_lossy().chars().take(15).collect();
            self.names.insert(pid, name);
        }
    }

    /// The objects mapped by `pid` now, by build ID.
    fn learn_objects(&mut self, pid: Pid) {
        let Ok(maps) = std::fs::read_to_string(match pid {
            Pid::Pid(p) => format!("/proc/{p}/maps"),
            _ => "/proc/self/maps".to_owned(),
        }) else {
            return;
        };
        for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
            if path.starts_with('/') {
                let path = PathBuf::from(path);
                if let Ok(Some(id)) = blazesym::helper::read_elf_build_id(&path) {
                    self.objects
                        .entry(padded(&id))
                        .or_insert_with(|| (id.to_vec(), path));
                }
            }
        }
    }

    /// The build ID the kernel wrote as `id` (its own length) and the file that has it:
    /// one seen mapped, or the distribution's debug file.
    fn object_of(&self, id: &[u8; 20]) -> (Vec<u8>, Option<PathBuf>) {
        if let Some((id, p)) = self.objects.get(id) {
            return (id.clone(), Some(p.clone()));
        }
        // Unknown length: GNU build IDs are 20 bytes, shorter ones are zero-padded.
        let id = trim_build_id(id);
        let hex = hex(&id);
        let debug = match (hex.get(..2), hex.get(2..)) {
            (Some(dir), Some(file)) if !file.is_empty() => Some(PathBuf::from(format!(
                "/usr/lib/debug/.build-id/{dir}/{file}.debug"
            ))),
            _ => None,
        };
        (id, debug.filter(|d| d.exists()))
    }

    /// The final `stack` records: counts read now (the programs are detached), frames
    /// symbolized. `comm` names a pid. Stacks with the same frames in one region of one
    /// process are one record, their kinds side by side.
    pub fn finish(
        &mut self,
        probe: &Probe,
        comm: impl Fn(u32) -> String,
    ) -> Result<Symbolized, TraceError> {
        self.refresh(probe)?;
        let mut merged: BTreeMap<(u32, String, u64, RawStack), [u64; FAULT_KINDS]> =
            BTreeMap::new();
        for (key, count) in probe.stack_counts()? {
            let Some(stack) = self.stacks.get(&key) else {
                continue;
            };
            // The image's own name; else the process's (as the session or we last read it).
            let name = match self.image_names.get(&(key.tgid, key.inst)) {
                Some(n) => n.clone(),
                None => match comm(key.tgid) {
                    c if c.is_empty() => self.names.get(&key.tgid).cloned().unwrap_or_default(),
                    c => c,
                },
            };
            let kinds = merged
                .entry((key.tgid, name, key.region, stack.clone()))
                .or_default();
            let k = FaultKind::from_u8(key.kind as u8).unwrap_or(FaultKind::Other);
            kinds[k as usize] += count.pages;
        }
        let names = Names::resolve(merged.keys().map(|(_, _, _, s)| s));
        let mut out = Symbolized::default();
        for ((pid, comm, region, stack), kinds) in merged {
            // The kernel stack is taken inside our program: its own frames come first.
            let frames: Vec<StackFrame> = stack
                .kernel
                .iter()
                .map(|&a| names.kernel_frame(a))
                .skip_while(|f| f.function.as_deref().is_some_and(is_bpf_machinery))
                .chain(stack.user.iter().map(|f| names.user_frame(f)))
                .collect();
            out.frames += frames.len() as u64;
            out.unresolved += frames.iter().filter(|f| f.function.is_none()).count() as u64;
            out.records
                .push(Record::stack(pid, comm, region, kinds, frames));
        }
        // Most pages first: what a reader looks at.
        out.records.sort_by_key(|r| {
            std::cmp::Reverse(r.faults_by_kind().unwrap_or_default().iter().sum::<u64>())
        });
        Ok(out)
    }
}

/// Function names (and source lines) of every frame of the stacks, read per object file.
struct Names {
    user: HashMap<(PathBuf, u64), Name>,
    /// The build ID of each object file as opened here.
    file_ids: HashMap<PathBuf, Option<[u8; 20]>>,
    kernel: HashMap<u64, Name>,
}

#[derive(Clone, Debug, Default)]
struct Name {
    function: String,
    file: Option<String>,
    line: Option<u32>,
}

impl Names {
    fn resolve<'a>(stacks: impl Iterator<Item = &'a RawStack>) -> Self {
        let mut names = Names {
            user: HashMap::new(),
            file_ids: HashMap::new(),
            kernel: HashMap::new(),
        };
        let mut by_object: BTreeMap<PathBuf, Vec<u64>> = BTreeMap::new();
        let mut kernel: Vec<u64> = Vec::new();
        for s in stacks {
            kernel.extend(&s.kernel);
            for f in &s.user {
                if let Some((m, off)) = f.lookup()
                    && names.same_file(f)
                {
                    by_object.entry(m.clone()).or_default().push(off);
                }
            }
        }
        let symbolizer = Symbolizer::builder().enable_code_info(true).build();
        for (object, mut offsets) in by_object {
            offsets.sort_unstable();
            offsets.dedup();
            let src = source::Source::Elf(source::Elf::new(&object));
            if let Ok(syms) = symbolizer.symbolize(&src, Input::FileOffset(&offsets)) {
                for (off, sym) in offsets.iter().zip(syms) {
                    if let Some(n) = name_of(&sym) {
                        names.user.insert((object.clone(), *off), n);
                    }
                }
            }
        }
        kernel.sort_unstable();
        kernel.dedup();
        let src = source::Source::Kernel(source::Kernel::default());
        if !kernel.is_empty()
            && let Ok(syms) = symbolizer.symbolize(&src, Input::AbsAddr(&kernel))
        {
            for (addr, sym) in kernel.iter().zip(syms) {
                if let Some(n) = name_of(&sym) {
                    names.kernel.insert(*addr, n);
                }
            }
        }
        names
    }

    /// Whether `f`'s object file, opened here, is the one its process mapped: a path can
    /// name another file here (another mount namespace, a binary rebuilt since), whose
    /// symbols would be wrong. Reads the file's build ID once. A frame without a build ID
    /// is taken on trust.
    fn same_file(&mut self, f: &UserFrame) -> bool {
        if let (Some(m), Some(_)) = (&f.module, &f.build_id) {
            self.file_ids.entry(m.clone()).or_insert_with(|| {
                blazesym::helper::read_elf_build_id(m)
                    .ok()
                    .flatten()
                    .map(|id| padded(&id))
            });
        }
        self.was_same_file(f)
    }

    /// [`Self::same_file`]'s answer, as read.
    fn was_same_file(&self, f: &UserFrame) -> bool {
        match (&f.module, &f.build_id) {
            (Some(m), Some(want)) => self.file_ids.get(m).copied().flatten() == Some(padded(want)),
            _ => true,
        }
    }

    fn user_frame(&self, f: &UserFrame) -> StackFrame {
        let name = f
            .lookup()
            .filter(|_| self.was_same_file(f))
            .and_then(|(m, off)| self.user.get(&(m.clone(), off)));
        StackFrame {
            addr: f.addr,
            kernel: false,
            function: name.map(|n| n.function.clone()),
            module: f.module.as_ref().map(|m| m.display().to_string()),
            build_id: f.build_id.as_deref().map(hex),
            file_offset: f.file_offset,
            file: name.and_then(|n| n.file.clone()),
            line: name.and_then(|n| n.line),
        }
    }

    fn kernel_frame(&self, addr: u64) -> StackFrame {
        let name = self.kernel.get(&addr);
        StackFrame {
            addr,
            kernel: true,
            function: name.map(|n| n.function.clone()),
            module: Some("[kernel]".to_owned()),
            ..StackFrame::default()
        }
    }
}

fn name_of(sym: &Sym<'_>) -> Option<Name> {
    let s = sym.as_sym()?;
    let code = s.code_info.as_deref();
    Some(Name {
        function: s.name.to_string(),
        file: code.map(|c| match &c.dir {
            Some(d) => d.join(&*c.file).display().to_string(),
            None => c.file.to_string_lossy().into_owned(),
        }),
        line: code.and_then(|c| c.line),
    })
}

/// Kernel functions that run our programs (the program itself, the tracepoint's or the
/// trampoline's glue), not the code that made the fault.
fn is_bpf_machinery(function: &str) -> bool {
    ["bpf_prog_", "bpf_trace_run", "__bpf_", "bpf_trampoline"]
        .iter()
        .any(|p| function.starts_with(p))
}

/// A build ID as the kernel's 20-byte field holds it.
fn padded(id: &[u8]) -> [u8; 20] {
    let mut out = [0; 20];
    let n = id.len().min(20);
    out[..n].copy_from_slice(&id[..n]);
    out
}

/// A build ID without the zero padding of the kernel's 20-byte field (GNU build IDs are
/// 20 bytes; shorter ones, e.g. 16-byte MD5/UUID, are padded).
fn trim_build_id(id: &[u8; 20]) -> Vec<u8> {
    let n = id.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    id[..n].to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_lose_only_their_padding() {
        let mut id = [0u8; 20];
        id[..16].copy_from_slice(&[0xab; 16]);
        assert_eq!(trim_build_id(&id), vec![0xab; 16]);
        assert_eq!(hex(&[0x01, 0xfe]), "01fe");
    }

    #[test]
    fn kernel_stacks_start_at_the_fault_not_in_our_program() {
        assert!(is_bpf_machinery(
            "bpf_prog_413c585e4c61b5c3_page_fault_events"
        ));
        assert!(is_bpf_machinery("bpf_trace_run3"));
        assert!(!is_bpf_machinery("exc_page_fault"));
    }

    #[inline(never)]
    fn marker() -> u64 {
        std::hint::black_box(7)
    }

    /// This test binary's frame at `addr`, normalized as a live process's would be.
    fn own_frame(addr: u64, caller: bool) -> UserFrame {
        let normalizer = Normalizer::builder().enable_build_ids(true).build();
        let out = normalizer
            .normalize_user_addrs(Pid::Slf, &[addr])
            .expect("normalize our own address");
        let (offset, meta) = out.outputs[0];
        let Some(UserMeta::Elf(elf)) = out.meta.get(meta) else {
            panic!("our own code is in an ELF file: {:?}", out.meta);
        };
        UserFrame {
            addr,
            module: Some(elf.path.clone()),
            build_id: elf.build_id.as_ref().map(|b| b.to_vec()),
            file_offset: Some(offset),
            caller,
        }
    }

    #[test]
    fn callers_resolve_at_the_call_and_other_files_not_at_all() {
        assert_eq!(marker(), 7);
        let start = marker as *const () as u64;
        // A leaf at the function's first byte, and a caller whose return address is the
        // byte after it (looked up one byte back, at the start).
        let leaf = own_frame(start, false);
        let caller = own_frame(start + 1, true);
        // The same path with another build ID: a different file than the one mapped.
        let mut stranger = own_frame(start, false);
        stranger.build_id = Some(vec![0x5a; 20]);
        let stack = RawStack {
            kernel: Vec::new(),
            user: vec![leaf.clone(), caller.clone(), stranger.clone()],
        };
        let names = Names::resolve(std::iter::once(&stack));
        for f in [&leaf, &caller] {
            let name = names.user_frame(f).function.unwrap_or_default();
            assert!(name.contains("marker"), "{f:?} resolved as {name:?}");
        }
        assert_eq!(names.user_frame(&stranger).function, None);
    }

    #[test]
    fn the_tracer_knows_its_own_libc_by_build_id() {
        let t = StackTable::new();
        let libc = t
            .objects
            .values()
            .find(|(_, p)| p.to_string_lossy().contains("libc.so"));
        assert!(
            libc.is_some(),
            "objects: {:?}",
            t.objects.values().collect::<Vec<_>>()
        );
    }
}
