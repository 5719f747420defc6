/* The store's helper thread: writeback during commits, the page cache ahead between them
 * (core/writeback.h). */
#include "core/writeback.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "core/page_ahead.h"

/* Between rounds: a commit writes a few hundred pages per millisecond, enough for a round to
 * have work without the thread spinning over an almost clean file. */
#define ROUND_PAUSE_NS 1000000L
/* Reads ahead in steps this large, so a commit that starts waits for one step at most. */
#define READ_STEP (256u << 10)

struct ud_writeback {
    int fd;
    int read_fd; /* the page cache ahead (core/page_ahead.h), or -1 */
    uint8_t *buf;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;                    /* (mu) commits running */
    int stop;                      /* (mu) */
    uint64_t cache_from, cache_to; /* (mu) still to read ahead */
    uint64_t read_to;              /* (mu) read up to here (the steps are in file order) */
    uint64_t rounds;               /* __atomic */
};

static void *writeback_main(void *arg)
{
    struct ud_writeback *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        /* Reading ahead first, commit or not: the stretch must be cached before LMDB's writes
         * reach it. A step takes a fraction of a millisecond. */
        if (w->cache_from < w->cache_to) {
            uint64_t from = w->cache_from;
            uint64_t to = w->cache_to - from > READ_STEP ? from + READ_STEP : w->cache_to;
            w->cache_from = to;
            pthread_mutex_unlock(&w->mu);
            /* A failed read leaves pages uncached: LMDB's writes then cache them as the kernel
             * chooses, which costs CPU, not correctness. */
            (void)ud_page_ahead_read(w->read_fd, w->buf, READ_STEP, from, to);
            pthread_mutex_lock(&w->mu);
            if (to > w->read_to)
                w->read_to = to;
            if (w->cache_from < w->cache_to)
                continue;
        }
        if (w->active > 0) {
            pthread_mutex_unlock(&w->mu);
            /* Starts writeback of what is dirty and not yet under writeback; waits for nothing.
             * A failure shows again in the commit's fdatasync, which reports it. */
            (void)sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
            __atomic_add_fetch(&w->rounds, 1, __ATOMIC_RELAXED);
            struct timespec pause = {0, ROUND_PAUSE_NS};
            nanosleep(&pause, NULL);
            pthread_mutex_lock(&w->mu);
        } else {
            pthread_cond_wait(&w->cv, &w->mu);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Frees w once its thread is gone (or never started). */
static void writeback_free(struct ud_writeback *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    if (w->read_fd >= 0)
        close(w->read_fd);
    free(w->buf);
    free(w);
}

struct ud_writeback *ud_writeback_start(int fd, const char *path)
{
    struct ud_writeback *w = calloc(1, sizeof *w);
    if (w == NULL)
        return NULL;
    w->fd = fd;
    w->read_fd = ud_page_ahead_open_fd(path);
    if (w->read_fd >= 0 && (w->buf = malloc(READ_STEP)) == NULL) {
        close(w->read_fd);
        w->read_fd = -1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, writeback_main, w) != 0) {
        writeback_free(w);
        return NULL;
    }
    return w;
}

void ud_writeback_stop(struct ud_writeback *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    writeback_free(w);
}

void ud_writeback_begin(struct ud_writeback *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    if (w->active++ == 0)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void ud_writeback_end(struct ud_writeback *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    if (--w->active == 0 && w->cache_from < w->cache_to)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int ud_writeback_cache(struct ud_writeback *w, uint64_t from, uint64_t to)
{
    if (w == NULL || w->read_fd < 0)
        return -1;
    pthread_mutex_lock(&w->mu);
    /* Stretches follow each other; one still pending is merged with the new one. */
    if (w->cache_from >= w->cache_to || from < w->cache_from)
        w->cache_from = from;
    if (to > w->cache_to)
        w->cache_to = to;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

uint64_t ud_writeback_read_to(struct ud_writeback *w)
{
    if (w == NULL)
        return 0;
    pthread_mutex_lock(&w->mu);
    uint64_t to = w->read_to;
    pthread_mutex_unlock(&w->mu);
    return to;
}

uint64_t ud_writeback_rounds(struct ud_writeback *w)
{
    return w != NULL ? __atomic_load_n(&w->rounds, __ATOMIC_RELAXED) : 0;
}
