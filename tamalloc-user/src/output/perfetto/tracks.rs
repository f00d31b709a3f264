//! The file's tracks: a small uuid for each (in order of first use), and the descriptors
//! that name them, made when a track is first used and again when its name becomes known.

use std::collections::BTreeMap;

use perfetto_protos::{
    counter_descriptor::{CounterDescriptor, counter_descriptor::Unit},
    process_descriptor::ProcessDescriptor,
    thread_descriptor::ThreadDescriptor,
    track_descriptor::TrackDescriptor,
};
use protobuf::MessageField;
use tamalloc_common::trace::FaultKind;

/// The memory counter tracks of each process (bytes); the fault kinds' follow them.
pub const MEMORY_COUNTERS: [&str; 4] =
    ["VmRSS", "VmSize", "tamalloc reserved", "tamalloc resident"];

/// A track, by what it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Track {
    /// The `tamalloc` track: the trace's own records.
    Global,
    Process(u32),
    Thread(u32, u32),
    /// An index into [`MEMORY_COUNTERS`], then into [`FaultKind::ALL`].
    Counter(u32, usize),
    /// A region, by its identity.
    Region(u32, u64),
}

/// Descriptors to write before the packet that uses their tracks.
pub type New = Vec<TrackDescriptor>;

#[derive(Default)]
pub struct Tracks {
    uuids: BTreeMap<Track, u64>,
    /// Described tracks (processes and threads: with the name they were given, empty if none).
    described: BTreeMap<Track, String>,
    /// Command name per pid, once known.
    comms: BTreeMap<u32, String>,
    /// Names of threads (not leaders) as the tracer gave them.
    thread_names: BTreeMap<(u32, u32), String>,
}

impl Tracks {
    pub fn uuid(&mut self, t: Track) -> u64 {
        let next = self.uuids.len() as u64 + 1;
        *self.uuids.entry(t).or_insert(next)
    }

    /// The root track named `name`.
    pub fn global(&mut self, name: &str, new: &mut New) -> u64 {
        let uuid = self.uuid(Track::Global);
        if self
            .described
            .insert(Track::Global, String::new())
            .is_none()
        {
            let mut d = TrackDescriptor::new();
            d.set_uuid(uuid);
            d.set_name(name.to_owned());
            new.push(d);
        }
        uuid
    }

    /// The process's track (with its name when known).
    pub fn process(&mut self, pid: u32, new: &mut New) -> u64 {
        let uuid = self.uuid(Track::Process(pid));
        if !self.described.contains_key(&Track::Process(pid)) {
            self.describe_process(pid, new);
        }
        uuid
    }

    fn describe_process(&mut self, pid: u32, new: &mut New) {
        let name = self.comms.get(&pid).cloned().unwrap_or_default();
        let mut pd = ProcessDescriptor::new();
        pd.set_pid(to_i32(pid));
        if !name.is_empty() {
            pd.set_process_name(name.clone());
        }
        let mut d = TrackDescriptor::new();
        d.set_uuid(self.uuid(Track::Process(pid)));
        d.process = MessageField::some(pd);
        self.described.insert(Track::Process(pid), name);
        new.push(d);
    }

    pub fn set_thread_name(&mut self, pid: u32, tid: u32, name: &str) {
        self.thread_names.insert((pid, tid), name.to_owned());
    }

    /// What a thread is called: its own name, else its process's (as a new thread's comm
    /// is; Perfetto shows the tid beside it); empty while neither is known.
    fn thread_label(&self, pid: u32, tid: u32) -> String {
        match (self.comms.get(&pid), self.thread_names.get(&(pid, tid))) {
            (_, Some(own)) if tid != pid => own.clone(),
            (Some(comm), _) => comm.clone(),
            _ => String::new(),
        }
    }

    /// The thread's track, described again when its name changed.
    pub fn thread(&mut self, pid: u32, tid: u32, new: &mut New) -> u64 {
        self.process(pid, new);
        let uuid = self.uuid(Track::Thread(pid, tid));
        let name = self.thread_label(pid, tid);
        if self.described.get(&Track::Thread(pid, tid)) != Some(&name) {
            let mut td = ThreadDescriptor::new();
            td.set_pid(to_i32(pid));
            td.set_tid(to_i32(tid));
            if !name.is_empty() {
                td.set_thread_name(name.clone());
            }
            let mut d = TrackDescriptor::new();
            d.set_uuid(uuid);
            d.thread = MessageField::some(td);
            self.described.insert(Track::Thread(pid, tid), name);
            new.push(d);
        }
        uuid
    }

    /// Names a process (again if its name changed), and its threads described so far.
    pub fn name_process(&mut self, pid: u32, comm: &str, new: &mut New) {
        if comm.is_empty() || self.comms.get(&pid).is_some_and(|c| c == comm) {
            return;
        }
        self.comms.insert(pid, comm.to_owned());
        self.describe_process(pid, new);
        let threads: Vec<u32> = self
            .described
            .keys()
            .filter_map(|t| match *t {
                Track::Thread(p, tid) if p == pid => Some(tid),
                _ => None,
            })
            .collect();
        for tid in threads {
            self.thread(pid, tid, new);
        }
    }

    /// Counter `index` of the process (see [`Track::Counter`]).
    pub fn counter(&mut self, pid: u32, index: usize, new: &mut New) -> u64 {
        let (name, unit) = match MEMORY_COUNTERS.get(index) {
            Some(name) => ((*name).to_owned(), Unit::UNIT_SIZE_BYTES),
            None => {
                let kind = FaultKind::ALL[(index - MEMORY_COUNTERS.len()) % FaultKind::ALL.len()];
                (format!("pages touched {}", kind.name()), Unit::UNIT_COUNT)
            }
        };
        let mut c = CounterDescriptor::new();
        c.set_unit(unit);
        self.child(Track::Counter(pid, index), pid, name, Some(c), new)
    }

    /// The track of region `id` of `pid`.
    pub fn region(&mut self, pid: u32, id: u64, new: &mut New) -> u64 {
        self.child(
            Track::Region(pid, id),
            pid,
            format!("region {id:#x}"),
            None,
            new,
        )
    }

    /// A track of the process's own (a counter or a region): it shows with the process's
    /// tracks (a child of a process track is its sibling in Perfetto's model).
    fn child(
        &mut self,
        t: Track,
        pid: u32,
        name: String,
        counter: Option<CounterDescriptor>,
        new: &mut New,
    ) -> u64 {
        let parent = self.process(pid, new);
        let uuid = self.uuid(t);
        if self.described.insert(t, String::new()).is_none() {
            let mut d = TrackDescriptor::new();
            d.set_uuid(uuid);
            d.set_parent_uuid(parent);
            d.set_name(name);
            if let Some(c) = counter {
                d.counter = MessageField::some(c);
            }
            new.push(d);
        }
        uuid
    }
}

fn to_i32(id: u32) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}
