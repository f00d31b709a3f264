#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Check that every setting of the given fragments ended up in .config (after
# merge_config.sh -m and make olddefconfig): each CONFIG_X=v line with the same
# value, each "# CONFIG_X is not set" not set.  The fragments are merged in the
# order given, as merge_config.sh merges them: a later setting of a symbol
# replaces an earlier one.
# usage: check-config.sh path/to/.config fragment...
set -u
dotconfig=$1
shift
# "symbol<TAB>setting<TAB>fragment", the last setting of each symbol only.
settings=$(
	for frag in "$@"; do
		sed -nE -e "s|^(CONFIG_[A-Za-z0-9_]+)=.*|\1\t&\t$frag|p" \
			-e "s|^# (CONFIG_[A-Za-z0-9_]+) is not set\$|\1\t&\t$frag|p" "$frag"
	done | awk -F '\t' '!($1 in last) { keys[++n] = $1 } { last[$1] = $0 }
		END { for (i = 1; i <= n; i++) print last[keys[i]] }'
)
n=0
tab=$(printf '\t')
while IFS="$tab" read -r sym line frag; do
	[ -n "$sym" ] || continue
	case $line in
	'#'*) grep -qE "^$sym=" "$dotconfig" || continue ;;
	*) ! grep -qxF "$line" "$dotconfig" || continue ;;
	esac
	got=$(grep -E "^(# )?$sym[= ]" "$dotconfig" || echo "$sym absent")
	echo "MISMATCH ($frag): want '$line', got '$got'"
	n=$((n + 1))
done <<EOF
$settings
EOF
echo "$n mismatches"
[ "$n" -eq 0 ]
