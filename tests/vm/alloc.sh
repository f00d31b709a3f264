#!/bin/sh
# The allocator and the stats commands on the real syscalls 554/555/556.
set -eu
cd /tmp
fail() {
	echo "alloc: FAILED: $*"
	exit 1
}

# 554: the demo's region comes from the syscall, not the fallback, and is named.
tamalloc demo --size 1MiB --rate 0 --hold 0s >demo.out 2>&1 || fail "demo: $(cat demo.out)"
tail -n 1 demo.out | grep -q '"path":"syscall"' || fail "demo did not use syscall 554: $(tail -n 1 demo.out)"
tail -n 1 demo.out | grep -q '"write_zero":256,' || fail "demo counts: $(tail -n 1 demo.out)"

# 555 for one process, and for all (pid 0): this shell is listed, with syscall as source.
tamalloc stats $$ --json >self.json || fail "stats \$\$"
grep -q "\"pid\":$$," self.json || fail "stats \$\$: $(cat self.json)"
grep -q '"source":"syscall"' self.json || fail "stats source: $(cat self.json)"
tamalloc stats --json >all.json || fail "stats"
grep -q "\"pid\":$$," all.json || fail "stats lists no $$"
# Every line of the table has its columns.
tamalloc stats | head -n 3

# 556: the process count equals the number of records 555 lists.
tamalloc global --json >global.json || fail "global"
grep -q '"source":"syscall"' global.json || fail "global source: $(cat global.json)"
# Each command counts itself once; a process of an earlier test may still be ending, so
# the two must agree on one of a few tries.
tries=0
while :; do
	tamalloc stats --json >all.json
	tamalloc global --json >global.json
	listed=$(wc -l <all.json)
	counted=$(sed -n 's/.*"nr_processes":\([0-9]*\).*/\1/p' global.json)
	test "$listed" -eq "$counted" && break
	tries=$((tries + 1))
	test "$tries" -lt 5 || fail "555 listed $listed processes, 556 counted $counted"
	sleep 1
done

# Bad input: one clear line and a non-zero exit.
if tamalloc demo --size 0 2>err.txt; then fail "demo --size 0 succeeded"; fi
test "$(wc -l <err.txt)" -eq 1 || fail "demo --size 0 said: $(cat err.txt)"
if tamalloc stats 999999 2>err.txt; then fail "stats 999999 succeeded"; fi
grep -q 'ESRCH' err.txt || fail "stats 999999 said: $(cat err.txt)"
echo "alloc: ok"
