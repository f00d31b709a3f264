#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Check that every CONFIG_ line of the given fragments ended up in .config
# with the same value (after merge_config.sh -m and make olddefconfig).
# usage: check-config.sh path/to/.config fragment...
set -u
dotconfig=$1
shift
rc=0
for frag in "$@"; do
	grep -E '^CONFIG_[A-Za-z0-9_]+=' "$frag" | while IFS= read -r line; do
		if ! grep -qxF "$line" "$dotconfig"; then
			sym=${line%%=*}
			got=$(grep -E "^(# )?$sym[= ]" "$dotconfig" || echo "$sym absent")
			echo "MISMATCH ($frag): want '$line', got '$got'"
			echo x
		fi
	done
done | { n=0; while IFS= read -r l; do [ "$l" = x ] && n=$((n + 1)) || echo "$l"; done; echo "$n mismatches"; [ "$n" -eq 0 ]; } || rc=1
exit $rc
