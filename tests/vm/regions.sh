#!/bin/sh
# `--regions` (issue 14) inside the patched kernel: an unmodified program's heap, calloc and
# mmap (`anon`), and ranges it names with prctl (`name:arena`: these kernels have
# CONFIG_ANON_VMA_NAME), each touched in a known pattern; check-ranges compares the faults
# per address range, exactly. A suite of its own: scenarios.sh fills its time in the debug
# kernels, where loading the tracer alone takes half a minute under TCG.
set -u
cd /tmp
fail=0
ranges() {
	name=$1
	regions=$2
	rm -f rgn-trace.jsonl rgn-expect.jsonl
	if tamalloc trace --quiet --regions "$regions" --output rgn-trace.jsonl -- \
		tamalloc-bench scenario "$name" --report rgn-expect.jsonl &&
		tamalloc-bench check-ranges --expect rgn-expect.jsonl --trace rgn-trace.jsonl; then
		echo "regions: ok: $name (--regions $regions)"
	else
		echo "regions: FAILED: $name (--regions $regions)"
		cat rgn-expect.jsonl
		fail=1
	fi
}
ranges anon anon
ranges named name:arena
exit "$fail"
