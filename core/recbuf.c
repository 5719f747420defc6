/* Record buffers kept for reuse by the thread that frees them (see recbuf.h). */
#include "core/recbuf.h"

#include <malloc.h>
#include <stdlib.h>

/*
 * Why: a RESP SET of a 1 KiB value is a record of about 1.1 KiB, above glibc's per-thread cache
 * (1032 bytes), so each free went through the arena's bins (_int_free was 7 % of the loop
 * thread's samples under redis-benchmark's pipelined SETs). Buffers of up to CLASS_MAX bytes are
 * allocated rounded up to a multiple of CLASS_STEP and kept, per class, on a list of this thread.
 */
#define CLASS_STEP  256u
#define CLASS_MAX   4096u
#define NCLASSES    (CLASS_MAX / CLASS_STEP)
#define SPARES_MAX  1024u      /* per class: a pipeline of writes frees hundreds at once */
#define SPARE_BYTES (4u << 20) /* in all, per thread */

struct spare {
    struct spare *next;
};

static _Thread_local struct spare *spares[NCLASSES];
static _Thread_local unsigned nspares[NCLASSES];
static _Thread_local size_t spare_bytes;

static size_t class_of(size_t len)
{
    return (len - 1) / CLASS_STEP;
}

void *ud_recbuf_alloc(size_t len)
{
    if (len == 0 || len > CLASS_MAX)
        return malloc(len);
    size_t c = class_of(len);
    struct spare *s = spares[c];
    if (s == NULL)
        return malloc((c + 1) * CLASS_STEP);
    spares[c] = s->next;
    nspares[c]--;
    spare_bytes -= (c + 1) * CLASS_STEP;
    return s;
}

void ud_recbuf_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    if (len == 0 || len > CLASS_MAX) {
        free(p);
        return;
    }
    size_t c = class_of(len);
    size_t bytes = (c + 1) * CLASS_STEP;
    /* A buffer of len's exact size (from plain malloc) may be smaller than its class. */
    if (nspares[c] >= SPARES_MAX || spare_bytes + bytes > SPARE_BYTES ||
        malloc_usable_size(p) < bytes) {
        free(p);
        return;
    }
    struct spare *s = p;
    s->next = spares[c];
    spares[c] = s;
    nspares[c]++;
    spare_bytes += bytes;
}

void ud_recbuf_trim(void)
{
    for (size_t c = 0; c < NCLASSES; c++) {
        while (spares[c] != NULL) {
            struct spare *next = spares[c]->next;
            free(spares[c]);
            spares[c] = next;
        }
        nspares[c] = 0;
    }
    spare_bytes = 0;
}
