/*
 * The store's helper thread for its data file: it starts the writeback of a commit's pages while
 * the commit writes them, and caches the stretch past LMDB's end that the store planned
 * (core/page_ahead.h).
 *
 * LMDB's commit writes its dirty pages with pwrite, then fdatasyncs. For random keys those are
 * thousands of scattered pages per commit, and the fdatasync's writeback (finding each dirty
 * page, building and submitting its bio, write-protecting mapped pages) ran on the committing
 * thread: about a quarter of the flush thread's CPU. While a commit runs, this thread calls
 * sync_file_range(SYNC_FILE_RANGE_WRITE) every millisecond, so most of that work runs on another
 * CPU as the pages are written. The commit's fdatasync still writes whatever is left, waits for
 * all of it and flushes the device's cache: durability is LMDB's own, as before. Reading the
 * stretch ahead (page allocation and zeroing, 5-7 % of the flush thread) moves here too.
 */
#ifndef UD_CORE_WRITEBACK_H
#define UD_CORE_WRITEBACK_H

#include <stdint.h>

struct ud_writeback;

/* Starts the thread for fd (the data file, open until ud_writeback_stop) at path. Returns NULL
 * when no thread could be started: commits then write back their pages themselves. */
struct ud_writeback *ud_writeback_start(int fd, const char *path);
/* Stops and joins the thread (NULL: nothing). */
void ud_writeback_stop(struct ud_writeback *w);

/* A commit starts (ends) writing its pages: the thread writes back while one runs. */
void ud_writeback_begin(struct ud_writeback *w);
void ud_writeback_end(struct ud_writeback *w);

/* Queues [from, to) of the file to be read into the page cache. Returns 0,
 * or -1 when the thread cannot (NULL, no descriptor of its own): the caller reads it itself. */
int ud_writeback_cache(struct ud_writeback *w, uint64_t from, uint64_t to);

/* How far the queued stretches have been read (0: nothing yet). */
uint64_t ud_writeback_read_to(struct ud_writeback *w);

/* Writeback rounds started so far (sync_file_range calls). */
uint64_t ud_writeback_rounds(struct ud_writeback *w);

#endif
