//! Userspace decode throughput: `tracer::decode::decode` + `tracer::aggregate::Aggregator::apply`
//! over a synthetic ring of records laid out as the BPF ring buffer lays them out (an 8-byte
//! header, then the record, 8-byte aligned). `cargo xtask bench` runs it and reports events/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tamalloc::tracer::{aggregate::Aggregator, decode::decode};
use tamalloc_common::trace::{Event, EventKind, FaultKind};

/// Records in the buffer.
const RECORDS: usize = 1 << 16;
/// Ring header before each record.
const HEADER: usize = 8;
const STRIDE: usize = (HEADER + size_of::<Event>()).next_multiple_of(8);
const PIDS: u32 = 16;
const PAGE: u64 = 4096;
const REGION_PAGES: u64 = 1 << 20;

fn bytes(e: &Event) -> &[u8] {
    // SAFETY: `Event` is plain data (repr(C), no padding holes read as anything else).
    unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), size_of::<Event>()) }
}

/// Mostly faults of 16 processes in one region each; a region record first, an unmap every
/// 8192 records, a fork every 16384 and an exit of each process at the end.
fn ring() -> Vec<u8> {
    let mut out = vec![0u8; RECORDS * STRIDE];
    let base = |pid: u32| 0x7f00_0000_0000u64 + u64::from(pid) * REGION_PAGES * PAGE;
    for i in 0..RECORDS {
        let pid = 1000 + (i as u32 % PIDS);
        let ts_ns = i as u64 * 100;
        let page = (i as u64 / u64::from(PIDS)) % REGION_PAGES;
        let e = if i < PIDS as usize {
            Event {
                ts_ns,
                addr: base(pid),
                arg1: REGION_PAGES * PAGE,
                pid,
                tid: pid,
                kind: EventKind::Region as u8,
                ..Event::default()
            }
        } else if i >= RECORDS - PIDS as usize {
            Event {
                ts_ns,
                pid,
                tid: pid,
                kind: EventKind::Exit as u8,
                ..Event::default()
            }
        } else if i % 8192 == 0 {
            Event {
                ts_ns,
                addr: base(pid) + page * PAGE,
                arg1: 16 * PAGE,
                arg2: 16 * PAGE,
                pid,
                tid: pid,
                kind: EventKind::Unmap as u8,
                ..Event::default()
            }
        } else if i % 16384 == 1 {
            Event {
                ts_ns,
                arg1: u64::from(pid + 10_000),
                pid,
                tid: pid,
                kind: EventKind::Fork as u8,
                ..Event::default()
            }
        } else {
            Event {
                ts_ns,
                addr: base(pid) + page * PAGE,
                arg1: base(pid),
                arg2: page,
                arg3: 6,
                pid,
                tid: pid,
                kind: EventKind::Fault as u8,
                detail: FaultKind::WriteZero as u8,
                ..Event::default()
            }
        };
        let at = i * STRIDE + HEADER;
        out[at..at + size_of::<Event>()].copy_from_slice(bytes(&e));
    }
    out
}

fn decode_apply(c: &mut Criterion) {
    let buf = ring();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.bench_function("decode_apply", |b| {
        b.iter(|| {
            let mut agg = Aggregator::new();
            for rec in buf.chunks_exact(STRIDE) {
                if let Some(ev) = decode(black_box(&rec[HEADER..])) {
                    agg.apply(&ev);
                }
            }
            black_box(agg.streamed)
        })
    });
    g.finish();
}

criterion_group!(benches, decode_apply);
criterion_main!(benches);
