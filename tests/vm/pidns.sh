#!/bin/sh
# 555 with pid 0 and 556 count exactly the processes of the caller's pid namespace.
set -eu
cd /tmp
fail() {
	echo "pidns: FAILED: $*"
	exit 1
}
# In a new pid namespace: sh (pid 1), a sleep (pid 2) and tamalloc itself (pid 3).
unshare --pid --fork sh -c '
	sleep 30 &
	tamalloc stats --json >/tmp/ns-stats.json
	tamalloc global --json >/tmp/ns-global.json
	kill $!
' || fail "unshare"
cat ns-stats.json
pids=$(sed -n 's/^{"pid":\([0-9]*\),.*/\1/p' ns-stats.json | tr '\n' ' ')
test "$pids" = "1 2 3 " || fail "555 in the namespace listed pids [$pids], not [1 2 3 ]"
grep -q '"nr_processes":3,' ns-global.json || fail "556 in the namespace: $(cat ns-global.json)"
# Outside, the same call sees more than those three.
test "$(tamalloc stats --json | wc -l)" -gt 3 || fail "the init namespace lists too few"
echo "pidns: ok"
