/*
 * example.c - the C API of libtamalloc.so in a few lines.
 *
 *   cargo build -p tamalloc-user
 *   cc -Wall -Wextra -Itamalloc-user/include tamalloc-user/examples/c/example.c \
 *      -Ltarget/debug -ltamalloc -o example
 *   LD_LIBRARY_PATH=target/debug ./example
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tamalloc.h"

#define SIZE (1024 * 1024)
#define PAGE 4096

static int print_stats(const char *when)
{
	struct tamalloc_proc_stats st;
	long n = tamalloc_proc_stats(getpid(), &st, 1);

	if (n != 1) {
		fprintf(stderr, "tamalloc_proc_stats: %s\n", strerror(errno));
		return -1;
	}
	printf("%-14s pid %d comm %.16s VmSize %llu KiB VmRSS %llu KiB (%u permille) "
	       "tamalloc regions %llu reserved %llu KiB resident %llu KiB\n",
	       when, st.pid, st.comm, (unsigned long long)st.vm_size_kib,
	       (unsigned long long)st.vm_rss_kib, st.resident_permille,
	       (unsigned long long)st.tamalloc_regions,
	       (unsigned long long)st.tamalloc_reserved_kib,
	       (unsigned long long)st.tamalloc_resident_kib);
	return 0;
}

int main(void)
{
	struct tamalloc_global_stats g;
	unsigned char *p;
	size_t i;

	if (print_stats("before:"))
		return 1;
	p = tamalloc(SIZE);
	if (!p) {
		fprintf(stderr, "tamalloc(%d): %s\n", SIZE, strerror(errno));
		return 1;
	}
	for (i = 0; i < SIZE; i++) {
		if (p[i]) {
			fprintf(stderr, "byte %zu is %u, not zero\n", i, p[i]);
			return 1;
		}
	}
	if (print_stats("after alloc:"))
		return 1;
	/* Write one byte in every other page: half the region becomes resident. */
	for (i = 0; i < SIZE; i += 2 * PAGE)
		p[i] = 0xa5;
	if (print_stats("after writes:"))
		return 1;
	if (tafree(p, SIZE)) {
		fprintf(stderr, "tafree: %s\n", strerror(errno));
		return 1;
	}
	if (print_stats("after tafree:"))
		return 1;

	errno = 0;
	if (tamalloc(0) != NULL || errno != EINVAL) {
		fprintf(stderr, "tamalloc(0) should fail with EINVAL, errno %d\n", errno);
		return 1;
	}
	printf("tamalloc(0): %s (EINVAL), as documented\n", strerror(errno));

	errno = 0;
	if (tamalloc_proc_stats(-1, NULL, 0) != -1 || errno != EINVAL) {
		fprintf(stderr, "tamalloc_proc_stats(-1) should fail with EINVAL\n");
		return 1;
	}
	if (tamalloc_global_stats(&g)) {
		fprintf(stderr, "tamalloc_global_stats: %s\n", strerror(errno));
		return 1;
	}
	printf("global: %llu processes, MemTotal %llu KiB, MemAvailable %llu KiB\n",
	       (unsigned long long)g.nr_processes, (unsigned long long)g.mem_total_kib,
	       (unsigned long long)g.mem_available_kib);
	return 0;
}
