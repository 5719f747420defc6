/* Test build of unison-writer whose namespace WALs sit on the power-loss file layer; SIGUSR1 cuts
 * the power. */

/*
 * unison-writer-powerloss is unison-writer's own objects linked with this file and
 * -Wl,--wrap=ud_writer_config_finish (tests/e2e/meson.build): nothing in the product changes. The
 * wrapper lets the real function check the configuration, then points the engine options of every
 * namespace (cfg->engine.fs) at the power-loss layer of tests/lib/fs_powerloss.h: WAL segment
 * stores land in a heap copy and reach the file only through the WAL's own fsyncs.
 *
 * The power cut is SIGUSR1. The signal is blocked here, in the main thread before any other
 * thread exists, so every thread inherits the mask and only the power thread, waiting in sigwait,
 * receives it, whatever the loop or the apply thread are doing at that moment. It runs
 * ud_fs_powerloss_crash (each differing 512-byte sector of every open WAL file is written or
 * dropped at random, with a keep probability of 0, 1/4, 1/2, 3/4 or 1) and then _exit(86) at once:
 * no handler, no flush, no graceful raft close.
 *
 * What the cut covers, and why that is the model: the writer's namespaces run with WAL sync mode
 * none, so a WAL may lose everything after its last fsync, which the layer simulates. Every
 * other file the writer relies on is written by code that makes it durable before it counts:
 * raft's log, term and snapshots (raft_uv, which completes an append only once it is on disk,
 * and the node never acknowledges an entry raft has not persisted and committed), LMDB (committed
 * with its own fsync, and only after the flush fsynced the WAL up to the checkpoint it records),
 * and the small files written with write, fsync, rename, fsync of the directory (cluster-id, the
 * default-namespace marker). Those keep, after the cut, whatever the process had written: a state
 * a real power cut can also leave (the writes reached the disk before it), although not the only
 * one. So the test proves the part the project owns, the raft/WAL split of docs/raft.md
 * "Durability": the WALs may lose any unsynced tail and raft's log must bring every acknowledged
 * record back, with the same LSN and bytes, on every writer; it does not re-test raft_uv's or
 * LMDB's own fsyncs.
 *
 * Environment: UD_POWERLOSS_SEED (decimal) fixes the crash's random choices (else they come from
 * the clock and the PID; the seed used is logged); UD_POWERLOSS_LYING=1 makes every WAL fsync a
 * no-op, the control that shows a missing fsync is caught.
 */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "tests/lib/fs_powerloss.h"
#include "writer/config.h"

/* The exit status after a power cut, so a test tells it from a crash. */
#define POWER_CUT_EXIT 86

int __real_ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg);
int __wrap_ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg);

static struct ud_fs_powerloss *layer;
static uint64_t seed;

static void *power_thread(void *arg)
{
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int sig = 0;
    while (sigwait(&set, &sig) != 0 || sig != SIGUSR1)
        ;
    int rc = ud_fs_powerloss_crash(layer, seed);
    struct ud_fs_powerloss_stats st;
    ud_fs_powerloss_stats(layer, &st);
    fprintf(stderr,
            "POWER CUT (seed %" PRIu64 "): %" PRIu64 " open WAL files, keep probability %u/1000, "
            "%" PRIu64 " unsynced sectors kept, %" PRIu64 " dropped, %" PRIu64
            " fsyncs before it%s\n",
            seed, st.crash_files, st.keep_permille, st.sectors_kept, st.sectors_dropped, st.syncs,
            rc != 0 ? "; the crash could not write a disk file" : "");
    _exit(rc == 0 ? POWER_CUT_EXIT : 1);
}

int __wrap_ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg)
{
    int rc = __real_ud_writer_config_finish(cfg, errmsg);
    if (rc != 0 || layer != NULL)
        return rc;
    const char *lying = getenv("UD_POWERLOSS_LYING");
    unsigned flags = lying != NULL && strcmp(lying, "1") == 0 ? UD_FS_POWERLOSS_LYING : 0;
    const char *s = getenv("UD_POWERLOSS_SEED");
    seed = s != NULL ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    if ((rc = ud_fs_powerloss_new(flags, &layer)) != 0)
        return ud_errf(errmsg, rc, "power-loss layer: out of memory");
    cfg->engine.fs = ud_fs_powerloss_fs(layer);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_t t;
    int err = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (err == 0)
        err = pthread_create(&t, NULL, power_thread, NULL);
    if (err != 0)
        return ud_errf(errmsg, UD_EIO, "power-loss thread: %s", strerror(err));
    pthread_detach(t);
    fprintf(stderr,
            "power-loss test build: WALs on the power-loss layer%s, seed %" PRIu64
            ", SIGUSR1 cuts the power\n",
            flags ? " (lying: fsync does nothing)" : "", seed);
    return 0;
}
