/* Background faulting-in of fresh memory (see prefault.h). */
#include "core/prefault.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>

/* A memtable has at most one block waiting; a few namespaces filling at once fit. */
#define QUEUE 16

struct request {
    const void *owner;
    char *addr;
    size_t len;
    void *_Atomic *done_addr;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;     /* a request, or stop */
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER; /* the request in progress is done */
static struct request queue[QUEUE];
static size_t queued;
static const void *busy_owner; /* owner of the request being populated, unlocked */
/* Serializes start and stop, so that a start never races the join of a stopping thread. */
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned users; /* under life_lock */
static bool stopping;
static _Atomic bool running;      /* written under lock, read without by ud_prefault_running() */
static _Atomic bool populate_off; /* the kernel does not know MADV_POPULATE_WRITE */
static pthread_t thread;

int ud_populate(void *addr, size_t len)
{
    if (madvise(addr, len, MADV_POPULATE_WRITE) == 0)
        return 0;
    if (errno == EINVAL)
        atomic_store_explicit(&populate_off, true, memory_order_relaxed);
    return -1;
}

bool ud_populate_supported(void)
{
    return !atomic_load_explicit(&populate_off, memory_order_relaxed);
}

bool ud_prefault_running(void)
{
    return atomic_load_explicit(&running, memory_order_relaxed) && ud_populate_supported();
}

static void *prefault_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "ud-prefault");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!stopping && queued == 0)
            pthread_cond_wait(&wake, &lock);
        if (stopping)
            break;
        struct request r = queue[0];
        queued--;
        for (size_t i = 0; i < queued; i++)
            queue[i] = queue[i + 1];
        busy_owner = r.owner;
        pthread_mutex_unlock(&lock);
        /* A kernel without MADV_POPULATE_WRITE: the writer faults the pages itself. */
        bool ok = ud_populate(r.addr, r.len) == 0;
        pthread_mutex_lock(&lock);
        if (ok)
            atomic_store_explicit(r.done_addr, r.addr, memory_order_release);
        busy_owner = NULL;
        pthread_cond_broadcast(&finished);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

int ud_prefault_start(void)
{
    int rc = 0;
    pthread_mutex_lock(&life_lock);
    if (users == 0) {
        pthread_mutex_lock(&lock);
        stopping = false;
        running = pthread_create(&thread, NULL, prefault_main, NULL) == 0;
        rc = running ? 0 : -1;
        pthread_mutex_unlock(&lock);
    }
    if (rc == 0)
        users++;
    pthread_mutex_unlock(&life_lock);
    return rc;
}

void ud_prefault_stop(void)
{
    pthread_mutex_lock(&life_lock);
    if (users == 0 || --users > 0) {
        pthread_mutex_unlock(&life_lock);
        return;
    }
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    pthread_mutex_lock(&lock);
    running = false;
    queued = 0;
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&life_lock);
}

int ud_prefault_request(const void *owner, void *addr, size_t len, void *_Atomic *done_addr)
{
    int rc = -1;
    pthread_mutex_lock(&lock);
    if (running && !stopping && queued < QUEUE) {
        queue[queued++] = (struct request){owner, addr, len, done_addr};
        pthread_cond_signal(&wake);
        rc = 0;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

void ud_prefault_cancel(const void *owner)
{
    pthread_mutex_lock(&lock);
    size_t kept = 0;
    for (size_t i = 0; i < queued; i++)
        if (queue[i].owner != owner)
            queue[kept++] = queue[i];
    queued = kept;
    while (busy_owner == owner)
        pthread_cond_wait(&finished, &lock);
    pthread_mutex_unlock(&lock);
}
