//! JSON lines: one [`Record`] per line, buffered (no flush per line) and flushed at the end.

use std::io::{self, BufWriter, Write};

use crate::tracer::{Sink, record::Record};

pub struct JsonLines<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> JsonLines<W> {
    pub fn new(w: W) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, w),
        }
    }
}

impl<W: Write> Sink for JsonLines<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::{decode::TraceEvent, record::StackFrame};

    #[test]
    fn writes_one_complete_line_per_record() {
        let mut buf = Vec::new();
        {
            let mut sink = JsonLines::new(&mut buf);
            for pid in 1..=3 {
                sink.record(&Record::Event(TraceEvent::Exit { ts_ns: 5, pid }))
                    .ok();
            }
            sink.finish().ok();
        }
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], r#"{"type":"exit","ts_ns":5,"pid":3}"#);
    }

    #[test]
    fn a_stack_record_is_one_line_with_its_frames_leaf_first() {
        let frame = |addr, function: Option<&str>, kernel| StackFrame {
            addr,
            kernel,
            function: function.map(str::to_owned),
            ..StackFrame::default()
        };
        let r = Record::Stack {
            pid: 7,
            comm: "a\nb".into(),
            region: 4096,
            read_zero: 0,
            write_zero: 3,
            cow_zero: 0,
            cow: 0,
            other: 0,
            frames: vec![frame(2, Some("clear_user"), true), frame(1, None, false)],
        };
        let mut buf = Vec::new();
        {
            let mut sink = JsonLines::new(&mut buf);
            sink.record(&r).expect("record");
            sink.finish().expect("finish");
        }
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(
            text,
            "{\"type\":\"stack\",\"pid\":7,\"comm\":\"a\\nb\",\"region\":4096,\"read_zero\":0,\
             \"write_zero\":3,\"cow_zero\":0,\"cow\":0,\"other\":0,\"frames\":[{\"addr\":2,\
             \"kernel\":true,\"function\":\"clear_user\"},{\"addr\":1}]}\n"
        );
        assert_eq!(
            serde_json::from_str::<Record>(text.trim_end()).ok(),
            Some(r)
        );
    }
}
