/*
 * Room for raft's log on a full disk: the reserve file, the shortage and the wait (log_reserve.h).
 */
#include "raft/log_reserve.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#define LOG "raft"
/* A waiting allocation tries again after this long, doubling up to WAIT_MAX_MS. */
#define WAIT_FIRST_MS 100
#define WAIT_MAX_MS   1000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake; /* closing; on the monotonic clock (init_wake) */
static pthread_once_t wake_once = PTHREAD_ONCE_INIT;
static int fd = -1;         /* (lock) */
static char path[PATH_MAX]; /* set at open */
static size_t want;         /* set at open */
static size_t held;         /* (lock) bytes allocated in the file */
static atomic_bool shortage;
static atomic_bool closing;
static atomic_int waiting; /* allocations waiting for room */

static void begin_shortage(const char *why)
{
    if (!atomic_exchange(&shortage, true))
        ud_warn(LOG, "%s: writes are refused until %s holds %zu bytes again", why, path, want);
}

/* A waiting allocation's timed wait must not stretch with a step of the wall clock. */
static void init_wake(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &attr);
    pthread_condattr_destroy(&attr);
}

int ud_raft_reserve_open(const char *file, size_t bytes, char *errmsg)
{
    pthread_once(&wake_once, init_wake);
    if (snprintf(path, sizeof path, "%s", file) >= (int)sizeof path)
        return ud_errf(errmsg, UD_EINVAL, "raft log reserve %s: path too long", file);
    want = bytes;
    atomic_store(&closing, false);
    atomic_store(&shortage, false);
    pthread_mutex_lock(&lock);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int err = fd < 0 ? errno : posix_fallocate(fd, 0, (off_t)bytes);
    if (err == 0)
        held = bytes;
    else if (fd >= 0 && (err == ENOSPC || err == EDQUOT) && ftruncate(fd, 0) == 0)
        held = 0; /* what the failed allocation took goes back */
    pthread_mutex_unlock(&lock);
    if (err == ENOSPC || err == EDQUOT) {
        char why[PATH_MAX + 64];
        snprintf(why, sizeof why, "the disk of %s has no room for raft's log reserve", path);
        begin_shortage(why);
        return 0;
    }
    if (err != 0)
        return ud_errf(errmsg, ud_err_from_errno(err), "raft log reserve %s: %s", path,
                       strerror(err));
    return 0;
}

void ud_raft_reserve_close(void)
{
    pthread_mutex_lock(&lock);
    if (fd >= 0)
        close(fd);
    fd = -1;
    pthread_mutex_unlock(&lock);
}

bool ud_raft_log_short(void)
{
    return atomic_load_explicit(&shortage, memory_order_relaxed);
}

void ud_raft_log_short_reason(char *buf, size_t size)
{
    snprintf(buf, size,
             "the disk is full: raft's log has no room left to grow (its reserve %s needs %zu "
             "bytes back); retry once space is free",
             path, want);
}

/* Gives the reserve's blocks back to the filesystem; true when it held any. */
static bool give_back(void)
{
    pthread_mutex_lock(&lock);
    bool had = fd >= 0 && held > 0 && ftruncate(fd, 0) == 0;
    if (had)
        held = 0;
    pthread_mutex_unlock(&lock);
    return had;
}

int ud_raft_reserve_on_full(const char *segment, int (*alloc)(void *arg), void *arg)
{
    char why[PATH_MAX + 96];
    snprintf(why, sizeof why, "the disk is full allocating raft's log segment %s", segment);
    begin_shortage(why);
    int err = ENOSPC; /* or EDQUOT: the caller's error, which the retries replace */
    if (give_back()) {
        err = alloc(arg);
        if (err == 0) {
            ud_warn(LOG, "%s: took the room of its reserve %s instead", why, path);
            return 0;
        }
    }
    ud_error(LOG, "%s, and no reserve is left: raft's log waits for room", why);
    atomic_fetch_add(&waiting, 1);
    unsigned delay = WAIT_FIRST_MS;
    while ((err == ENOSPC || err == EDQUOT) && !atomic_load(&closing)) {
        struct timespec until = ud_mono_deadline(delay);
        pthread_mutex_lock(&lock);
        if (!atomic_load(&closing))
            pthread_cond_timedwait(&wake, &lock, &until);
        pthread_mutex_unlock(&lock);
        if (atomic_load(&closing))
            break;
        give_back(); /* restored meanwhile by an older node's timer: this allocation first */
        err = alloc(arg);
        delay = delay * 2 < WAIT_MAX_MS ? delay * 2 : WAIT_MAX_MS;
    }
    atomic_fetch_sub(&waiting, 1);
    if (err == 0)
        ud_info(LOG, "raft's log segment %s allocated: the disk has room again", segment);
    return err;
}

bool ud_raft_reserve_waiting(void)
{
    return atomic_load(&waiting) > 0;
}

void ud_raft_reserve_restore(void)
{
    /* Not while an allocation waits: the room that appears is raft's first. */
    if (!atomic_load(&shortage) || atomic_load(&waiting) > 0)
        return;
    /* Only with a margin past the reserve: taking the last free blocks back would fail the
     * WAL's and the store's writes that are waiting for them. */
    struct statvfs st;
    if (statvfs(path, &st) != 0 || (unsigned long long)st.f_bavail * st.f_frsize < want + want / 4)
        return;
    pthread_mutex_lock(&lock);
    if (fd < 0) /* its creation failed at start (no inode or directory block free) */
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int err = fd < 0 ? errno : posix_fallocate(fd, 0, (off_t)want);
    if (err == 0)
        held = want;
    else if (fd >= 0 && ftruncate(fd, 0) == 0)
        held = 0;
    pthread_mutex_unlock(&lock);
    if (err != 0)
        ud_debug(LOG, "raft's log reserve %s: %s; trying again in a second", path, strerror(err));
    if (err == 0 && atomic_exchange(&shortage, false))
        ud_info(LOG, "raft's log reserve %s holds %zu bytes again: writes are taken again", path,
                want);
}

void ud_raft_reserve_closing(void)
{
    pthread_once(&wake_once, init_wake);
    pthread_mutex_lock(&lock);
    atomic_store(&closing, true);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&lock);
}
