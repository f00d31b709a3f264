/*
 * Three call sites that first-touch known page counts of one private anonymous mapping,
 * by kind, plus one the kernel touches for us (read(2) from /dev/zero). Built by
 * tests/trace_stacks.rs with frame pointers and without inlining, so each site is a frame.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define WRITES 24
#define READS 16
#define READ_WRITES 8
#define KERNEL 4
#define PAGES (WRITES + READS + READ_WRITES + KERNEL)

/* WRITES pages: write_zero each. */
__attribute__((noinline)) void site_write(volatile char *p)
{
	for (int i = 0; i < WRITES; i++)
		p[i * PAGE] = 1;
}

/* READS pages: read_zero each. */
__attribute__((noinline)) int site_read(volatile char *p)
{
	int sum = 0;

	for (int i = 0; i < READS; i++)
		sum += p[i * PAGE];
	return sum;
}

/* READ_WRITES pages: read_zero, then cow_zero, each. */
__attribute__((noinline)) int site_read_then_write(volatile char *p)
{
	int sum = 0;

	for (int i = 0; i < READ_WRITES; i++)
		sum += p[i * PAGE];
	for (int i = 0; i < READ_WRITES; i++)
		p[i * PAGE] = 2;
	return sum;
}

/* KERNEL pages, written by the kernel inside read(2): write_zero each, kernel stack. */
__attribute__((noinline)) int site_kernel(char *p)
{
	int fd = open("/dev/zero", O_RDONLY);

	if (fd < 0)
		return -1;
	if (read(fd, p, KERNEL * PAGE) != KERNEL * PAGE)
		return -1;
	return close(fd);
}

/* argv[1], if given: milliseconds to stay alive after the touches. */
int main(int argc, char **argv)
{
	char *p = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	site_write(p);
	int sum = site_read(p + WRITES * PAGE);

	sum += site_read_then_write(p + (WRITES + READS) * PAGE);
	if (site_kernel(p + (WRITES + READS + READ_WRITES) * PAGE) != 0) {
		perror("read /dev/zero");
		return 1;
	}
	if (argc > 1)
		usleep(atoi(argv[1]) * 1000);
	return sum;
}
