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
 * file is extended (sparse: no disk is allocated) and the next stretch brought into the cache once
 * with readahead(2), on the writing thread, through a descriptor opened with POSIX_FADV_RANDOM.
 */
#ifndef UD_CORE_PAGE_AHEAD_H
#define UD_CORE_PAGE_AHEAD_H

#include <stddef.h>
#include <stdint.h>

struct ud_page_ahead {
    int fd;          /* -1: off (could not open, or a call failed) */
    uint64_t end;    /* the cache is prepared up to here */
    uint64_t used;   /* at the last call */
    uint64_t growth; /* the largest growth between two calls */
};

/* Opens path for reading ahead. On failure the helper is off and later calls do nothing: pages
 * are then cached as the kernel chooses, which costs CPU, not correctness. */
void ud_page_ahead_open(struct ud_page_ahead *pa, const char *path);
void ud_page_ahead_close(struct ud_page_ahead *pa);

/*
 * The file's data ends at used bytes. When less than half of the stretch it should have cached
 * past that end is left, the file is extended up to used plus the stretch, never past limit (the
 * map size: LMDB does not write past it), and the new part read into the page cache. Pages below
 * used are never touched. Called once per write, so the file's growth between two calls is what
 * one write appended: the stretch is twice the largest such growth seen, between
 * UD_PAGE_AHEAD_MIN and _MAX. What one call reads is thus bounded by what the writes before it
 * appended: the first write after an open reads UD_PAGE_AHEAD_MIN, however large the store, and
 * the flush's commits (16-24 MiB) stay inside the stretch from their second on. Call it inside
 * the write transaction, before it writes: LMDB's writer lock keeps every other writer of the
 * file out, and its last committed page is used.
 */
void ud_page_ahead_prepare(struct ud_page_ahead *pa, uint64_t used, uint64_t limit);

#define UD_PAGE_AHEAD_MIN (4ull << 20)
#define UD_PAGE_AHEAD_MAX (64ull << 20)

#endif
