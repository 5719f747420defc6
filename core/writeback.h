/*
 * The store's writeback thread for its data file: it starts the writeback of a commit's pages
 * while the commit writes them.
 *
 * LMDB's commit writes its dirty pages with pwrite, then fdatasyncs. For random keys those are
 * thousands of scattered pages per commit, and the fdatasync's writeback (finding each dirty
 * page, building and submitting its bio, write-protecting mapped pages) ran on the committing
 * thread: about a quarter of the flush thread's CPU. While a commit runs, this thread calls
 * sync_file_range(SYNC_FILE_RANGE_WRITE) every millisecond, so most of that work runs on another
 * CPU as the pages are written. The commit's fdatasync still writes whatever is left, waits for
 * all of it and flushes the device's cache: durability is LMDB's own, as before.
 */
#ifndef UD_CORE_WRITEBACK_H
#define UD_CORE_WRITEBACK_H

#include <stdint.h>

struct ud_writeback;

/* Starts the thread for fd (the data file, open until ud_writeback_stop). Returns NULL when no
 * thread could be started: commits then write back their pages themselves. */
struct ud_writeback *ud_writeback_start(int fd);
/* Stops and joins the thread (NULL: nothing). */
void ud_writeback_stop(struct ud_writeback *w);

/* A commit starts (ends) writing its pages: the thread writes back while one runs. */
void ud_writeback_begin(struct ud_writeback *w);
void ud_writeback_end(struct ud_writeback *w);

/* Writeback rounds started so far (sync_file_range calls). */
uint64_t ud_writeback_rounds(struct ud_writeback *w);

#endif
