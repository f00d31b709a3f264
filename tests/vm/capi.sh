#!/bin/sh
# The C API (libtamalloc.so, tamalloc.h) on the real syscalls: the example allocates 1 MiB
# with tamalloc(), writes every other page, reads its own stats through 555 and frees it.
set -eu
cd /tmp
tamalloc-example-c >capi.out
cat capi.out
# After the allocation: one tamalloc region of 1 MiB, nothing of it resident yet.
grep '^after alloc:' capi.out | grep -q 'tamalloc regions 1 reserved 1024 KiB resident 0 KiB'
# After writing every other page of 256: 128 pages resident.
grep '^after writes:' capi.out | grep -q 'tamalloc regions 1 reserved 1024 KiB resident 512 KiB'
grep '^after tafree:' capi.out | grep -q 'tamalloc regions 0 reserved 0 KiB'
echo "capi: ok"
