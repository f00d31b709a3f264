/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * tamalloc.h - the C API of libtamalloc.so.
 *
 * tamalloc(size) returns PAGE_ALIGN(size) bytes that read as zero and cost no RAM until a
 * page is first written: syscall 554 on a patched kernel, or, when the kernel answers ENOSYS,
 * the documented fallback made by the same thread right away:
 *     mmap(NULL, PAGE_ALIGN(size), PROT_READ | PROT_WRITE,
 *          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
 * Every call tries 554 first; nothing is cached.
 *
 * The statistics come from syscalls 555/556, or from /proc on kernels without them.
 * Every function returns NULL or -1 and sets errno on failure.
 *
 * Link with -ltamalloc (target/<profile>/libtamalloc.so of the tamalloc-user crate).
 * In C++, write `struct tamalloc_proc_stats`: the function of the same name hides the bare
 * type name (as with stat(2)).
 */
#ifndef TAMALLOC_H
#define TAMALLOC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The same layouts as include/uapi/linux/tamalloc.h of the kernel patch (its guard is
 * _UAPI_LINUX_TAMALLOC_H in the tree and _LINUX_TAMALLOC_H once installed).
 */
#if !defined(_UAPI_LINUX_TAMALLOC_H) && !defined(_LINUX_TAMALLOC_H)
#define TAMALLOC_COMM_LEN 16

/* One process (syscall 555). 96 bytes. */
struct tamalloc_proc_stats {
	int32_t pid;                    /* in the caller's pid namespace */
	uint32_t oom_score;             /* /proc/PID/oom_score, 0..2000 */
	int32_t oom_score_adj;          /* -1000..1000 */
	uint32_t resident_permille;     /* VmRSS * 1000 / VmSize, 0 if VmSize is 0 */
	char comm[TAMALLOC_COMM_LEN];   /* NUL-padded */
	uint64_t vm_size_kib;
	uint64_t vm_rss_kib;
	uint64_t rss_anon_kib;
	uint64_t rss_file_kib;
	uint64_t rss_shmem_kib;
	uint64_t tamalloc_regions;      /* tamalloc VMAs ([anon:tamalloc]) */
	uint64_t tamalloc_reserved_kib; /* their size */
	uint64_t tamalloc_resident_kib; /* their resident (not zero-page) part */
};

/* System-wide totals (syscall 556). 80 bytes. */
struct tamalloc_global_stats {
	uint64_t nr_processes;          /* processes (not kernel threads) */
	uint64_t vm_size_kib;
	uint64_t vm_rss_kib;
	uint64_t tamalloc_regions;
	uint64_t tamalloc_reserved_kib;
	uint64_t tamalloc_resident_kib;
	uint64_t mem_total_kib;
	uint64_t mem_available_kib;
	uint64_t committed_as_kib;
	uint64_t commit_limit_kib;
};
#endif /* !_UAPI_LINUX_TAMALLOC_H && !_LINUX_TAMALLOC_H */

#ifdef __cplusplus
#define TAMALLOC_STATIC_ASSERT static_assert
#else
#define TAMALLOC_STATIC_ASSERT _Static_assert
#endif
TAMALLOC_STATIC_ASSERT(sizeof(struct tamalloc_proc_stats) == 96,
		       "struct tamalloc_proc_stats must match the uapi (96 bytes)");
TAMALLOC_STATIC_ASSERT(sizeof(struct tamalloc_global_stats) == 80,
		       "struct tamalloc_global_stats must match the uapi (80 bytes)");

/*
 * A zero-filled region of PAGE_ALIGN(size) bytes, page aligned.
 * NULL + errno: EINVAL (size 0), ENOMEM (size overflows, no room, RLIMIT_AS).
 */
void *tamalloc(size_t size);

/*
 * Unmaps a region from tamalloc(size), size being the size asked for.
 * 0, or -1 + errno: EINVAL (NULL, unaligned pointer, size 0).
 */
int tafree(void *ptr, size_t size);

/*
 * pid > 0: writes that process's record (when count >= 1) and returns 1.
 * pid == 0: writes at most count records, one per process of the caller's pid namespace, and
 * returns how many there are (call with count 0 to size the buffer; retry if it grew).
 * -1 + errno: ESRCH (no such process), EINVAL (pid < 0), EFAULT (buf NULL with count > 0).
 */
long tamalloc_proc_stats(pid_t pid, struct tamalloc_proc_stats *buf, unsigned int count);

/* System-wide totals. 0, or -1 + errno. */
int tamalloc_global_stats(struct tamalloc_global_stats *buf);

#ifdef __cplusplus
}
#endif

#endif /* TAMALLOC_H */
