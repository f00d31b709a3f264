#!/bin/sh
# Smoke test: the guest has what the other VM tests rely on.
set -u
fail=0
check() {
	if "$@"; then
		echo "smoke: ok: $*"
	else
		echo "smoke: FAILED: $*"
		fail=1
	fi
}
check test -r /proc/self/maps
check test -r /proc/meminfo
check test -d /sys/kernel/tracing/events
check test -d /sys/kernel/tracing/events/exceptions/page_fault_user
check test -d /sys/kernel/tracing/events/raw_syscalls/sys_enter
if command -v tamalloc >/dev/null 2>&1; then
	check tamalloc --version
else
	echo "smoke: tamalloc not in this image; skipping its check"
fi
exit "$fail"
