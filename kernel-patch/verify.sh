#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the patched kernel from scratch and run the kselftest in QEMU (TCG).
#
#   [KERNEL=6.1|6.12] kernel-patch/verify.sh WORKDIR [debug]
#
# KERNEL (default 6.1) picks the series, kernel-patch/$KERNEL/, and the
# tarball, /usr/src/linux-source-$KERNEL.tar.xz.  The fragments are the shared
# tamalloc.config (and debug.config), each followed by $KERNEL/'s own if it
# has one.  WORKDIR (outside the repository, one per kernel) gets the pristine
# tree with the series applied (src/), the build (build-normal/ or build-debug/), the initramfs and
# the console log (qemu-normal.log or qemu-debug.log).  Exits 0 only if every
# fragment option survived olddefconfig, the guest printed "init: success" and
# its log has no kernel BUG/WARNING/KASAN/lockdep report.
# Needs: build-essential flex bison bc libelf-dev libssl-dev cpio
# qemu-system-x86 busybox-static, and the linux-source-$KERNEL tarball (or
# TARBALL=...).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=${1:?usage: $0 WORKDIR [debug]}
kind=${2:-normal}
kernel=${KERNEL:-6.1}
series=$here/$kernel
[ -f "$series/series" ] || { echo "verify: no series for kernel $kernel ($series/series)" >&2; exit 2; }
tarball=${TARBALL:-/usr/src/linux-source-$kernel.tar.xz}
[ -f "$tarball" ] || { echo "verify: $tarball missing: install linux-source-$kernel" >&2; exit 2; }
jobs=${JOBS:-$(nproc)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
src=$work/src
obj=$work/build-$kind

fragments=()
names=(tamalloc.config)
[ "$kind" = debug ] && names+=(debug.config)
for f in "${names[@]}"; do
	fragments+=("$here/$f")
	[ -f "$series/$f" ] && fragments+=("$series/$f")
done

if [ ! -e "$src/.patched" ]; then
	rm -rf "$src" "$work/extract"
	mkdir -p "$work/extract"
	tar -C "$work/extract" -xf "$tarball"
	mv "$work/extract"/* "$src"
	rmdir "$work/extract"
	while read -r p; do
		case $p in ''|'#'*) continue ;; esac
		patch -d "$src" -p1 --quiet < "$series/$p"
	done < "$series/series"
	touch "$src/.patched"
fi

mkdir -p "$obj"
make -s -C "$src" O="$obj" tinyconfig
(cd "$src" && scripts/kconfig/merge_config.sh -m -O "$obj" "$obj/.config" "${fragments[@]}" >/dev/null)
make -s -C "$src" O="$obj" olddefconfig
"$here/check-config.sh" "$obj/.config" "${fragments[@]}"

start=$(date +%s)
nice -n 10 make -s -C "$src" O="$obj" -j"$jobs" bzImage
echo "verify: $kind bzImage built in $(($(date +%s) - start)) s"
make -s -C "$src" O="$obj" headers_install INSTALL_HDR_PATH="$obj/hdrs"
gcc -static -O2 -Wall -I "$src/tools/testing/selftests" -I "$obj/hdrs/include" \
	-o "$obj/tamalloc_test" "$src/tools/testing/selftests/tamalloc/tamalloc_test.c"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# The archive's "." becomes the guest's /: mktemp's 0700 would keep the
# kselftest's unprivileged children out of /proc (EACCES).
chmod 755 "$root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
for a in sh mount poweroff echo cat ls uname; do ln -s busybox "$root/bin/$a"; done
cp "$obj/tamalloc_test" "$root/bin/tamalloc_test"
cat > "$root/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
echo "init: kernel $(uname -r)"
for e in raw_syscalls/sys_enter raw_syscalls/sys_exit exceptions/page_fault_user; do
	[ -e /sys/kernel/tracing/events/$e/id ] && echo "init: tracepoint $e" ||
		echo "init: tracepoint $e MISSING"
done
if /bin/tamalloc_test; then echo "init: success"; else echo "init: failure"; fi
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$obj/initrd.cpio.gz"

log=$work/qemu-$kind.log
timeout 300 qemu-system-x86_64 -accel tcg -m 512 -smp 2 -nographic -no-reboot \
	-kernel "$obj/arch/x86/boot/bzImage" -initrd "$obj/initrd.cpio.gz" \
	-append "console=ttyS0 panic=-1 oops=panic" > "$log" 2>&1 || true
grep -E '^(ok|not ok) |^# Totals|^init: ' "$log" || true
if grep -E 'BUG:|WARNING:|Call Trace|Oops|Kernel panic' "$log"; then
	echo "verify: kernel reports in $log"
	exit 1
fi
grep -q '^init: success' "$log" && ! grep -q 'MISSING' "$log"
