/* The store's writeback thread: writeback of a commit's pages while the commit writes them
 * (core/writeback.h). */
#include "core/writeback.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/* Between rounds: a commit writes a few hundred pages per millisecond, enough for a round to
 * have work without the thread spinning over an almost clean file. */
#define ROUND_PAUSE_NS 1000000L

struct ud_writeback {
    int fd;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active;      /* (mu) commits running */
    int stop;        /* (mu) */
    uint64_t rounds; /* __atomic */
};

static void *writeback_main(void *arg)
{
    struct ud_writeback *w = arg;
    pthread_setname_np(pthread_self(), "ud-writeback");
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
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
    free(w);
}

struct ud_writeback *ud_writeback_start(int fd)
{
    struct ud_writeback *w = calloc(1, sizeof *w);
    if (w == NULL) {
        ud_warn("store", "writeback thread: out of memory; commits write back their own pages");
        return NULL;
    }
    w->fd = fd;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pthread_create(&w->thread, NULL, writeback_main, w);
    if (rc != 0) {
        ud_warn("store", "writeback thread: %s; commits write back their own pages", strerror(rc));
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
    --w->active;
    pthread_mutex_unlock(&w->mu);
}

uint64_t ud_writeback_rounds(struct ud_writeback *w)
{
    return w != NULL ? __atomic_load_n(&w->rounds, __ATOMIC_RELAXED) : 0;
}
