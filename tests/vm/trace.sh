#!/bin/sh
# The tracer inside the patched kernel: regions come from the real syscall 554 (not the
# fallback), counts match the workload exactly, and stats come from syscall 555/556.
set -eu
cd /tmp
rm -f trace.jsonl expect.jsonl demo.jsonl
tamalloc trace --quiet --output trace.jsonl -- tamalloc-bench workload --report expect.jsonl
tamalloc-bench check-trace --expect expect.jsonl --trace trace.jsonl
grep -q '"stats_source":"syscall"' trace.jsonl
if grep '"type":"region"' trace.jsonl | grep -q '"fallback":true'; then
	echo "trace: a region came from the fallback although syscall 554 exists"
	exit 1
fi
test "$(grep -c '"type":"region"' trace.jsonl)" -eq 2

# Stats from 555 beside the counts: once the demo has touched all 1024 pages (and while it
# holds them), a sample shows its region 4 MiB reserved and 4 MiB resident.
tamalloc trace --quiet --interval 200ms --output demo.jsonl -- \
	tamalloc demo --size 4MiB --rate 16MiB/s --read-first --hold 3s >/dev/null
grep '"type":"stats"' demo.jsonl | grep '"source":"syscall"' >stats.json
grep '"tamalloc_reserved_kib":4096,' stats.json | grep '"tamalloc_resident_kib":4096,' |
	grep '"read_zero":1024,' | grep '"cow_zero":1024,' | head -n 1 >held.json
if ! test -s held.json; then
	echo "trace: no stats sample shows the demo's touched region:"
	cat stats.json
	exit 1
fi
cat held.json
echo "trace: ok"
