/* Writer process for the SIGKILL test: writes until killed, printing each acknowledged write. */

/*
 * Usage: crash_writer NS_DIR RUN_ID [THREADS]
 *
 * Opens the namespace (sync ALWAYS, small memtable and WAL segments so flushes and rotations
 * happen), prints "ready", then THREADS threads (default 4) write until the process is killed:
 *   - KV puts of unique keys "k/RUN/THREAD/SEQ" (most writes),
 *   - row puts "r/RUN/THREAD/SEQ" with columns c0, c1, c2,
 *   - aborted KV transactions holding one key "a/RUN/THREAD/SEQ" (begin, part, abort: three LSNs
 *     that must never become visible, which exercises LSN continuity across transactions).
 * Values are derived from the key (and column name) by test_value(), so the checker recomputes
 * them. After the API returned 0, one line "LSN KEY\n" is written to stdout with a single
 * write(2): a pipe write of at most PIPE_BUF bytes is atomic, so a kill never leaves half a line
 * and lines from different threads never interleave. The LSN is the acknowledged record's (the
 * ABORT record's for aborted transactions).
 *
 * Exit status: never exits on its own while healthy; 2 usage, 3 open failed, 4 a write failed
 * (message on stderr); after 120 s SIGALRM ends it (a driver that died without killing it).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/engine.h"
#include "core/err.h"
#include "tests/lib/testutil.h"

#define MAX_THREADS 16
#define VALUE_MAX   200

/* Shared with test_sigkill.c (same definition there): the value stored under key. */
static size_t test_value(const char *key, size_t key_len, uint8_t *buf)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < key_len; i++)
        h = (h ^ (uint8_t)key[i]) * 0x100000001b3ull;
    size_t len = 1 + (size_t)(ud_test_rand(&h) % VALUE_MAX);
    ud_test_fill(&h, buf, len);
    return len;
}

static struct ud_ns *g_ns;
static const char *g_run;

static void print_ack(uint64_t lsn, const char *key)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%" PRIu64 " %s\n", lsn, key);
    if (write(STDOUT_FILENO, line, (size_t)n) != n)
        _exit(4);
}

static void die(const char *what, const char *key, int rc, const char *errmsg)
{
    fprintf(stderr, "crash_writer: %s %s: %s (%s)\n", what, key, ud_strerror(rc), errmsg);
    _exit(4);
}

static void *writer_main(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    uint64_t rng = ((uint64_t)id + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    char errmsg[UD_ERRMSG_SIZE];
    uint8_t val[VALUE_MAX + 8];
    uint64_t lsn = 0;
    int rc;

    for (uint64_t seq = 0;; seq++) {
        unsigned pick = (unsigned)(ud_test_rand(&rng) % 100);
        char key[96];
        errmsg[0] = '\0';
        if (pick < 80) {
            int kl = snprintf(key, sizeof key, "k/%s/%u/%" PRIu64, g_run, id, seq);
            size_t vl = test_value(key, (size_t)kl, val);
            while ((rc = ud_ns_kv_put(g_ns, key, (size_t)kl, val, vl, &lsn, errmsg)) == UD_EBUSY)
                usleep(1000);
            if (rc != 0)
                die("kv put", key, rc, errmsg);
        } else if (pick < 90) {
            int kl = snprintf(key, sizeof key, "r/%s/%u/%" PRIu64, g_run, id, seq);
            char names[3][4];
            char full[3][128];
            uint8_t vals[3][VALUE_MAX + 8];
            struct ud_col cols[3];
            for (int c = 0; c < 3; c++) {
                snprintf(names[c], sizeof names[c], "c%d", c);
                int fl = snprintf(full[c], sizeof full[c], "%s#%s", key, names[c]);
                size_t vl = test_value(full[c], (size_t)fl, vals[c]);
                cols[c] = (struct ud_col){(const uint8_t *)names[c], 2, vals[c], vl};
            }
            struct ud_row row = {(const uint8_t *)key, (size_t)kl, cols, 3};
            while ((rc = ud_ns_row_put(g_ns, &row, &lsn, errmsg)) == UD_EBUSY)
                usleep(1000);
            if (rc != 0)
                die("row put", key, rc, errmsg);
        } else {
            int kl = snprintf(key, sizeof key, "a/%s/%u/%" PRIu64, g_run, id, seq);
            size_t vl = test_value(key, (size_t)kl, val);
            uint8_t txn[16];
            while ((rc = ud_ns_txn_begin(g_ns, UD_OP_PUT, UD_ENTRY_KV, txn, NULL, errmsg)) ==
                   UD_EBUSY)
                usleep(1000);
            if (rc != 0)
                die("txn begin", key, rc, errmsg);
            while ((rc = ud_ns_txn_kv(g_ns, txn, key, (size_t)kl, val, vl, NULL, errmsg)) ==
                   UD_EBUSY)
                usleep(1000);
            if (rc != 0)
                die("txn kv", key, rc, errmsg);
            while ((rc = ud_ns_txn_abort(g_ns, txn, &lsn, errmsg)) == UD_EBUSY)
                usleep(1000);
            if (rc != 0)
                die("txn abort", key, rc, errmsg);
        }
        print_ack(lsn, key);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: crash_writer NS_DIR RUN_ID [THREADS]\n");
        return 2;
    }
    unsigned threads = argc == 4 ? (unsigned)atoi(argv[3]) : 4;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "crash_writer: THREADS must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    g_run = argv[2];
    /* A writer orphaned by a dead driver must not run forever: SIGALRM's default action ends it. */
    alarm(120);

    struct ud_engine_options o = {
        .dir = argv[1],
        .name = "sigkill",
        .sync_mode = UD_WAL_SYNC_ALWAYS,
        .segment_size = 256u << 10,
        .memtable_bytes = 256u << 10,
        .map_size = 256u << 20,
    };
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_ns_open(&o, &g_ns, errmsg);
    if (rc != 0) {
        fprintf(stderr, "crash_writer: open %s: %s (%s)\n", argv[1], ud_strerror(rc), errmsg);
        return 3;
    }
    static const char ready[] = "ready\n";
    if (write(STDOUT_FILENO, ready, sizeof ready - 1) != (ssize_t)(sizeof ready - 1))
        return 4;

    pthread_t th[MAX_THREADS];
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&th[i], NULL, writer_main, (void *)(uintptr_t)i) != 0) {
            fprintf(stderr, "crash_writer: pthread_create failed\n");
            return 4;
        }
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    return 0;
}
