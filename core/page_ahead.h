/*
 * Keeps the page cache past the end of a file that grows by writes at its end (LMDB's data file)
 * made of single-page folios.
 *
 * ext4 on recent kernels caches a file in large folios (up to 128 KiB here) when a write of
 * several contiguous pages, such as LMDB's commit of pages it appended, creates them. Every later
 * 4 KiB rewrite of one of those pages then dirties the whole folio: the write walks each of its
 * buffers, and the writeback of the next fdatasync walks them all again. For a store whose
 * commits rewrite scattered single pages (random keys), that was a quarter of the flush thread's
 * CPU (docs/benchmarks.md). Pages read into the cache with readahead off are single pages, and a
 * write finds and keeps the folio that is already there. So before LMDB writes past its end, the
 * file is extended (sparse: no disk is allocated) and the next stretch read once through a
 * descriptor of its own with POSIX_FADV_RANDOM.
 */
#ifndef UD_CORE_PAGE_AHEAD_H
#define UD_CORE_PAGE_AHEAD_H

#include <stdint.h>

struct ud_page_ahead {
    int fd;          /* -1: off (could not open, or a call failed) */
    uint64_t end;    /* the cache is prepared up to here */
    uint64_t used;   /* at the last call */
    uint64_t growth; /* the largest growth between two calls */
    uint8_t *buf;    /* read scratch */
};

/* Opens path for reading ahead. On failure the helper is off and later calls do nothing: pages
 * are then cached as the kernel chooses, which costs CPU, not correctness. */
void ud_page_ahead_open(struct ud_page_ahead *pa, const char *path);
void ud_page_ahead_close(struct ud_page_ahead *pa);

/*
 * The file's data ends at used bytes. When less than half of the stretch it should have cached
 * past that end is left, the file is extended and cached up to used plus the stretch, never past
 * limit (the map size: LMDB does not write past it). Pages below used are never touched. Called
 * before every write, so the file's growth between two calls is what one write appended: the
 * stretch is twice the largest such growth seen, or a quarter of used, between UD_PAGE_AHEAD_MIN
 * and _MAX. A small store (a test's, a namespace just created) does not read 64 MiB at its first
 * write, and the flush's commits (16-24 MiB) stay inside it after the first.
 */
void ud_page_ahead_keep(struct ud_page_ahead *pa, uint64_t used, uint64_t limit);

#define UD_PAGE_AHEAD_MIN (4ull << 20)
#define UD_PAGE_AHEAD_MAX (64ull << 20)

#endif
