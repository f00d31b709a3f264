#!/bin/sh
# Recordings inside the patched kernel: a recording of the workload (regions from the real
# syscall 554) converts byte for byte to the JSON lines the same session wrote, with the
# workload's exact counts, and ends with the drops record.
set -eu
cd /tmp
rm -f rec.tamrec live.jsonl conv.jsonl expect-rec.jsonl
tamalloc trace --quiet --output live.jsonl --record rec.tamrec -- \
	tamalloc-bench workload --report expect-rec.jsonl
tamalloc report rec.tamrec --format jsonl -o conv.jsonl
if ! cmp live.jsonl conv.jsonl; then
	echo "record: the recording does not convert to the session's JSON lines"
	exit 1
fi
tamalloc-bench check-trace --expect expect-rec.jsonl --trace conv.jsonl
grep -q '"stats_source":"syscall"' conv.jsonl
if grep '"type":"region"' conv.jsonl | grep -q '"fallback":true'; then
	echo "record: a region came from the fallback although syscall 554 exists"
	exit 1
fi
tail -n 1 conv.jsonl | grep -q '"type":"drops"'
rm -f rec.tamrec live.jsonl conv.jsonl expect-rec.jsonl
echo "record: ok"
