/* Record buffers kept for reuse by the thread that frees them (the writer's loop encodes a
 * request's record, copies it into a raft command and frees it, hundreds at a time). */
#ifndef UD_CORE_RECBUF_H
#define UD_CORE_RECBUF_H

#include <stddef.h>

/*
 * At least len bytes of malloc'd memory (free() releases it as well as ud_recbuf_free), from the
 * calling thread's spare buffers when it has one of len's size class. NULL when out of memory.
 */
void *ud_recbuf_alloc(size_t len);

/* Frees p (malloc'd, at least len bytes; NULL allowed), or keeps it for this thread's next
 * ud_recbuf_alloc of a length of the same size class. */
void ud_recbuf_free(void *p, size_t len);

/* Frees the calling thread's spare buffers. A thread that called ud_recbuf_free calls this
 * before it exits, or its spares (up to a few MiB) are lost. */
void ud_recbuf_trim(void);

#endif
