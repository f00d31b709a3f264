#!/bin/sh
# The syscalls' man pages are installed, and their EXAMPLES programs (built by xtask against
# the patched kernel's headers) run on the patched kernel as the pages say.
# The guest has no man(1) and no nroff (busybox has neither): the pages are checked as
# files, not rendered; `groff -ww` lints them on the host (cargo test -p xtask manpages).
set -u
fail=0
bad() {
	echo "manpages: FAILED: $*"
	fail=1
}
if command -v man >/dev/null 2>&1; then
	echo "manpages: note: man(1) is present but not used"
else
	echo "manpages: no man(1) in the guest; checking the page files only"
fi
for name in tamalloc get_memory_usage_stats get_global_memory_usage_stats; do
	page=/usr/share/man/man2/$name.2
	if [ ! -s "$page" ]; then
		bad "$page is not installed"
		continue
	fi
	# .TH NAME 2 ...: the page is NAME(2).
	th=$(grep -m1 '^\.TH ' "$page")
	set -- $th
	if [ "${2:-}" != "$name" ] || [ "${3:-}" != 2 ]; then
		bad "$page: '$th' does not name $name(2)"
	fi
	grep -q "^$name \\\\- " "$page" || bad "$page: no NAME line for $name"
	grep -q "syscall(SYS_$name" "$page" || bad "$page: no syscall(SYS_$name ...) synopsis"
	echo "manpages: ok: $page is $name(2)"
done

# tamalloc(2): one [anon:tamalloc] line of 64 MiB.
if out=$(tamalloc-example); then
	echo "$out"
	line=$(echo "$out" | grep '\[anon:tamalloc\]$')
	range=${line%% *}
	start=${range%-*}
	end=${range#*-}
	if [ -z "$line" ] || [ $((0x$end - 0x$start)) -ne $((64 << 20)) ]; then
		bad "tamalloc-example: no 64 MiB [anon:tamalloc] mapping"
	fi
else
	bad "tamalloc-example failed"
fi

# get_memory_usage_stats(2): the header, pid 1, and the example itself.
if out=$(get_memory_usage_stats-example); then
	echo "$out"
	echo "$out" | head -n1 | grep -q 'PID COMM' || bad "no header line"
	echo "$out" | grep -qE '^ +1 ' || bad "pid 1 not listed (run as root)"
	echo "$out" | grep -q ' get_memory_usag ' || bad "the example does not list itself"
else
	bad "get_memory_usage_stats-example failed"
fi

# get_global_memory_usage_stats(2): at least this process, and MemTotal.
if out=$(get_global_memory_usage_stats-example); then
	echo "$out"
	n=$(echo "$out" | awk '/^processes:/ { print $2 }')
	[ "${n:-0}" -ge 1 ] || bad "processes: '${n:-}'"
	echo "$out" | grep -qE '^MemAvailable: +[0-9]+ of [1-9][0-9]* KiB$' || bad "no MemTotal"
else
	bad "get_global_memory_usage_stats-example failed"
fi
exit "$fail"
