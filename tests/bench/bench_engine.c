/* Engine benchmark: KV appends under each sync mode, random gets, and anonymous memory during load.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/engine.h"
#include "core/err.h"

/*
 * Keys and values, shared with bench_lmdb.c so both programs load the same data: key i is the 16
 * hex digits of splitmix64(i) (a bijection, so keys are unique and arrive in random order), value i
 * is one fixed random block with i stamped into its first 8 bytes (reads check the stamp).
 */
#define KEY_LEN 16

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void make_key(uint64_t i, char out[KEY_LEN + 1])
{
    snprintf(out, KEY_LEN + 1, "%016" PRIx64, splitmix64(i));
}

struct options {
    const char *mode;
    const char *dir;
    uint64_t records; /* 0: the mode's default */
    uint64_t gets;    /* 0: as many as records */
    uint32_t threads; /* 0: the mode's default */
    size_t value_size;
    uint64_t memtable_mb;  /* 0: the mode's default */
    uint64_t flush_txn_mb; /* 0: the engine's default */
    uint64_t max_seconds;  /* a load stops there and reports what it did (bounded runs) */
    uint32_t sample_ms;    /* RssAnon sampling period */
    int keep;              /* keep the namespace directory */
};

static uint8_t *g_block; /* the value block shared by every put */

static void die(const char *what, int rc, const char *errmsg)
{
    fprintf(stderr, "bench_engine: %s: %s%s%s\n", what, ud_strerror(rc),
            errmsg != NULL && errmsg[0] != '\0' ? ": " : "", errmsg != NULL ? errmsg : "");
    exit(1);
}

static void metric(const char *name, double value, const char *unit)
{
    printf("metric=%s value=%.3f unit=%s\n", name, value, unit);
    fflush(stdout);
}

static double secs_since(uint64_t t0)
{
    return (double)(ud_mono_ns() - t0) / 1e9;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* --- anonymous memory ------------------------------------------------------------------------- */

/* RssAnon of this process in kB (heap, arenas, thread stacks; not the LMDB or WAL file mappings,
 * which are page cache the kernel can drop). 0 if /proc is unreadable. */
static uint64_t rss_anon_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return 0;
    char line[256];
    uint64_t kb = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "RssAnon:", 8) == 0) {
            kb = strtoull(line + 8, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* Samples RssAnon every sample_ms while a load runs, and prints one progress line a second so a
 * stall (a flush that writers wait for) shows up in the log with its time. */
struct sampler {
    pthread_t thread;
    atomic_int stop;
    uint32_t period_ms;
    uint64_t max_kb;
    struct ud_ns *ns;
    atomic_uint_fast64_t *done; /* records put so far */
    uint64_t t0;
};

static void *sampler_main(void *arg)
{
    struct sampler *s = arg;
    uint64_t next_report = s->t0 + 1000000000ull;
    uint64_t last_done = 0;
    while (!atomic_load(&s->stop)) {
        uint64_t kb = rss_anon_kb();
        if (kb > s->max_kb)
            s->max_kb = kb;
        uint64_t now = ud_mono_ns();
        if (now >= next_report && s->ns != NULL) {
            struct ud_ns_stats st;
            ud_ns_stats(s->ns, &st);
            uint64_t done = atomic_load(s->done);
            printf("# t=%.0fs done=%" PRIu64 " last_s=%" PRIu64 " rss_anon_mb=%.1f "
                   "memtable_mb=%.1f sealed=%u flushed_lsn=%" PRIu64 "\n",
                   (double)(now - s->t0) / 1e9, done, done - last_done, (double)kb / 1024,
                   (double)st.memtable_bytes / (1 << 20), st.sealed_memtables, st.flushed_lsn);
            fflush(stdout);
            last_done = done;
            next_report += 1000000000ull;
        }
        sleep_ms(s->period_ms);
    }
    return NULL;
}

static void sampler_start(struct sampler *s, struct ud_ns *ns, atomic_uint_fast64_t *done,
                          uint32_t period_ms)
{
    memset(s, 0, sizeof *s);
    s->period_ms = period_ms;
    s->ns = ns;
    s->done = done;
    s->t0 = ud_mono_ns();
    s->max_kb = rss_anon_kb();
    if (pthread_create(&s->thread, NULL, sampler_main, s) != 0)
        die("pthread_create", UD_ENOMEM, NULL);
}

static uint64_t sampler_stop(struct sampler *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    return s->max_kb;
}

/* --- namespace setup ---------------------------------------------------------------------------
 */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rmtree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Opens a fresh namespace in {dir}/{mode}; the path is written to path_out (PATH_MAX bytes). */
static struct ud_ns *open_fresh(const struct options *o, const char *mode,
                                enum ud_wal_sync_mode sync, uint64_t memtable_mb, char *path_out)
{
    snprintf(path_out, 4096, "%s/%s", o->dir, mode);
    rmtree(path_out);
    struct ud_engine_options eo = {
        .dir = path_out,
        .name = mode,
        .sync_mode = sync,
        .memtable_bytes = (size_t)memtable_mb << 20,
        .flush_txn_bytes = o->flush_txn_mb << 20,
    };
    struct ud_ns *ns = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_ns_open(&eo, &ns, errmsg);
    if (rc != 0)
        die("ud_ns_open", rc, errmsg);
    return ns;
}

static void close_and_remove(struct ud_ns *ns, const struct options *o, const char *path)
{
    ud_ns_close(ns);
    if (!o->keep)
        rmtree(path);
}

static void print_stats(struct ud_ns *ns, const char *label)
{
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    printf("# %s: last_lsn=%" PRIu64 " durable_lsn=%" PRIu64 " flushed_lsn=%" PRIu64
           " memtable_mb=%.1f sealed=%u wal_segments=%u flush_errors=%" PRIu64 "\n",
           label, st.last_lsn, st.durable_lsn, st.flushed_lsn,
           (double)st.memtable_bytes / (1 << 20), st.sealed_memtables, st.wal_segments,
           st.flush_errors);
}

/* CPU time of the whole process (user + system), in ns. */
/* Bytes the process passed to write system calls (/proc/self/io wchar): the store's page writes
 * (LMDB writes its pages with pwrite/writev; the WAL is a mapping and does not count). */
static uint64_t written_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    if (f == NULL)
        return 0;
    char line[128];
    unsigned long long v = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "wchar: %llu", &v) == 1)
            break;
    fclose(f);
    return v;
}

static uint64_t process_cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
}

/* Synchronous writes of `size` bytes, each followed by fdatasync, in a scratch file next to the
 * namespace for about half a second: fsyncs per second (the dd oflag=dsync figure). */
static double fsync_rate(const char *dir, size_t size)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die("open fsync probe", UD_EIO, strerror(errno));
    uint8_t *buf = calloc(1, size);
    if (buf == NULL)
        die("calloc", UD_ENOMEM, NULL);
    uint64_t t0 = ud_mono_ns(), n = 0;
    while (ud_mono_ns() - t0 < 500000000ull) {
        if (pwrite(fd, buf, size, (off_t)((n % 64) * size)) != (ssize_t)size || fdatasync(fd) != 0)
            die("fsync probe", UD_EIO, strerror(errno));
        n++;
    }
    double rate = (double)n / secs_since(t0);
    free(buf);
    close(fd);
    unlink(path);
    return rate;
}

/* --- puts --------------------------------------------------------------------------------------
 */

struct put_run {
    struct ud_ns *ns;
    uint64_t records;
    size_t value_size;
    uint64_t deadline;           /* monotonic ns; the load stops there */
    atomic_uint_fast64_t next;   /* next record index to put */
    atomic_uint_fast64_t done;   /* records acknowledged */
    atomic_uint_fast64_t busy;   /* UD_EBUSY answers (admission control), each retried */
    atomic_uint_fast64_t cpu_ns; /* CPU time of the put threads (user + system) */
    uint32_t *lat_us;            /* per record acknowledgement latency, or NULL */
};

static void *put_worker(void *arg)
{
    struct put_run *r = arg;
    pthread_setname_np(pthread_self(), "bench-put");
    uint8_t *val = malloc(r->value_size);
    if (val == NULL)
        die("malloc", UD_ENOMEM, NULL);
    memcpy(val, g_block, r->value_size);
    char errmsg[UD_ERRMSG_SIZE];
    for (uint64_t n = 0;; n++) {
        uint64_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->records)
            break;
        /* Reading the clock costs ~20 ns; once every 256 puts is enough for the time limit. */
        if ((n & 255) == 0 && ud_mono_ns() >= r->deadline)
            break;
        char key[KEY_LEN + 1];
        make_key(i, key);
        memcpy(val, &i, sizeof i);
        uint64_t t0 = r->lat_us != NULL ? ud_mono_ns() : 0;
        int rc;
        while ((rc = ud_ns_kv_put(r->ns, key, KEY_LEN, val, r->value_size, NULL, errmsg)) ==
               UD_EBUSY)
            atomic_fetch_add(&r->busy, 1);
        if (rc != 0)
            die("ud_ns_kv_put", rc, errmsg);
        if (r->lat_us != NULL)
            r->lat_us[i] = (uint32_t)((ud_mono_ns() - t0) / 1000);
        atomic_fetch_add(&r->done, 1);
    }
    free(val);
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0)
        atomic_fetch_add(&r->cpu_ns,
                         (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
                             (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull);
    return NULL;
}

/* Runs the put workers to completion (or the deadline); returns the seconds taken. */
static double put_load(struct put_run *r, uint32_t threads)
{
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (tids == NULL)
        die("calloc", UD_ENOMEM, NULL);
    uint64_t t0 = ud_mono_ns();
    for (uint32_t t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, put_worker, r) != 0)
            die("pthread_create", UD_ENOMEM, NULL);
    for (uint32_t t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    free(tids);
    return secs_since(t0);
}

/* Reads back a sample of what was put: a benchmark of wrong answers measures nothing. */
static void verify_sample(struct ud_ns *ns, uint64_t records, size_t value_size)
{
    struct ud_buf buf = {0};
    uint64_t rng = 88172645463325252ull;
    for (int k = 0; k < 1000 && records > 0; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        uint64_t i = rng % records;
        char key[KEY_LEN + 1];
        make_key(i, key);
        int rc = ud_ns_kv_get(ns, key, KEY_LEN, &buf, NULL);
        if (rc != 0)
            die("verify: ud_ns_kv_get", rc, key);
        uint64_t stamp;
        memcpy(&stamp, buf.data, sizeof stamp);
        if (buf.len != value_size || stamp != i ||
            memcmp(buf.data + 8, g_block + 8, value_size - 8))
            die("verify", UD_ECORRUPT, key);
    }
    ud_buf_free(&buf);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/*
 * put-none: sync none, a memtable big enough that nothing flushes, so this is the apply path alone
 * (encode, WAL append through the stage, memtable insert).
 * put-sustained: sync none, a 64 MiB memtable (the engine's default was 64 MiB when the goal was
 * set; tests/bench/run keeps it), 5M random keys: flushes to LMDB run during
 * the load and writers wait when they fall behind; RssAnon is sampled throughout.
 * put-always: sync always, many writer threads, each put acknowledged after its fsync (group
 * commit).
 */
static void run_put(const struct options *o, const char *mode)
{
    int none = strcmp(mode, "put-none") == 0;
    int sustained = strcmp(mode, "put-sustained") == 0;
    uint64_t records = o->records ? o->records : none ? 300000 : sustained ? 5000000 : 300000;
    uint32_t threads = o->threads ? o->threads : (none || sustained) ? 1 : 64;
    uint64_t memtable_mb = o->memtable_mb;
    /* put-none: room for every record with generous per-entry overhead, twice: the active
     * memtable is sealed (and its flush starts, competing for the CPU) at half the budget. */
    if (memtable_mb == 0)
        memtable_mb = none ? 2 * ((records * (o->value_size + KEY_LEN + 512) >> 20) + 64) : 64;
    enum ud_wal_sync_mode sync = (none || sustained) ? UD_WAL_SYNC_NONE : UD_WAL_SYNC_ALWAYS;
    char name[64];
    snprintf(name, sizeof name, "%s", mode);
    for (char *p = name; *p; p++)
        if (*p == '-')
            *p = '_';

    printf("# %s records=%" PRIu64 " threads=%u value_size=%zu memtable_mb=%" PRIu64 " sync=%s\n",
           mode, records, threads, o->value_size, memtable_mb,
           none || sustained ? "none" : "always");
    uint64_t base_kb = rss_anon_kb();
    char path[4096];
    struct ud_ns *ns = open_fresh(o, mode, sync, memtable_mb, path);

    struct put_run r = {.ns = ns, .records = records, .value_size = o->value_size};
    r.deadline = ud_mono_ns() + o->max_seconds * 1000000000ull;
    if (!none && !sustained) {
        r.lat_us = calloc(records, sizeof *r.lat_us);
        if (r.lat_us == NULL)
            die("calloc", UD_ENOMEM, NULL);
    }
    if (!none && !sustained) {
        /* What this disk gives one synchronous writer right now: the ceiling group commit
         * multiplies by the records each fsync carries. */
        metric("fdatasync_4k_per_s", fsync_rate(path, 4096), "fsyncs/s");
        metric("fdatasync_64k_per_s", fsync_rate(path, 65536), "fsyncs/s");
    }
    struct ud_ns_stats st0;
    ud_ns_stats(ns, &st0);
    struct sampler smp;
    uint64_t cpu0 = process_cpu_ns(), wchar0 = written_bytes();
    sampler_start(&smp, ns, &r.done, o->sample_ms);
    uint64_t t0 = ud_mono_ns();
    double load_s = put_load(&r, threads);
    uint64_t cpu_load = process_cpu_ns() - cpu0;
    uint64_t done = atomic_load(&r.done);
    struct ud_ns_stats st;
    ud_ns_stats(ns, &st);
    uint64_t syncs = st.wal_syncs - st0.wal_syncs;
    print_stats(ns, "after load");
    /* A final flush so the with-flush figure covers moving every record into LMDB. */
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_ns_flush(ns, errmsg);
    if (rc != 0)
        die("ud_ns_flush", rc, errmsg);
    double total_s = secs_since(t0);
    uint64_t cpu_all = process_cpu_ns() - cpu0;
    uint64_t wchar = written_bytes() - wchar0;
    uint64_t max_kb = sampler_stop(&smp);
    print_stats(ns, "after flush");
    struct ud_ns_stats st_end;
    ud_ns_stats(ns, &st_end);
    verify_sample(ns, done, o->value_size);

    char m[128];
    snprintf(m, sizeof m, "%s_rate", name);
    metric(m, (double)done / load_s, "records/s");
    snprintf(m, sizeof m, "%s_records", name);
    metric(m, (double)done, "records");
    snprintf(m, sizeof m, "%s_complete", name);
    metric(m, done == records, "bool");
    if (none) {
        /* The figure is valid only if no flush ran inside the timed load. */
        metric("put_none_flushed_during_load", (double)st.flushed_lsn, "records");
    } else {
        snprintf(m, sizeof m, "%s_rate_with_final_flush", name);
        metric(m, (double)done / total_s, "records/s");
    }
    /* CPU the put threads used per record: steadier than the rate on a shared machine, and
     * what the apply path costs whatever the other threads (flush, WAL helper) do. */
    snprintf(m, sizeof m, "%s_put_cpu_us_per_record", name);
    metric(m, done > 0 ? (double)atomic_load(&r.cpu_ns) / 1000.0 / (double)done : 0, "us");
    /* Everything else the process spent, final flush included: the flush thread's LMDB work
     * above all (the WAL helper and the sampler are small). */
    snprintf(m, sizeof m, "%s_other_cpu_us_per_record", name);
    uint64_t put_cpu = atomic_load(&r.cpu_ns);
    metric(m,
           done > 0 && cpu_all > put_cpu ? (double)(cpu_all - put_cpu) / 1000.0 / (double)done : 0,
           "us");
    /* The whole process during the load only (put threads, WAL helper, flushes that ran during
     * the load), without the final flush. */
    snprintf(m, sizeof m, "%s_load_cpu_us_per_record", name);
    metric(m, done > 0 ? (double)cpu_load / 1000.0 / (double)done : 0, "us");
    /* What the flushes wrote per record (final flush included): a 1 KiB record whose leaf page
     * and branch pages are rewritten costs several KiB. */
    snprintf(m, sizeof m, "%s_flush_cpu_us_per_record", name);
    metric(m,
           done > 0 ? (double)(st_end.flush_cpu_ns - st0.flush_cpu_ns) / 1000.0 / (double)done : 0,
           "us");
    snprintf(m, sizeof m, "%s_store_write_kib_per_record", name);
    metric(m, done > 0 ? (double)wchar / 1024.0 / (double)done : 0, "KiB");
    snprintf(m, sizeof m, "%s_wal_syncs", name);
    metric(m, (double)syncs, "count");
    snprintf(m, sizeof m, "%s_records_per_sync", name);
    metric(m, syncs > 0 ? (double)done / (double)syncs : 0, "records");
    /* The group-commit rounds' fsyncs during the load: the device's part of the acknowledgement
     * latency; the rest of the time rounds gather appends or committers wait for a CPU. */
    uint64_t rounds = st.wal_sync_rounds - st0.wal_sync_rounds;
    uint64_t round_ns = st.wal_sync_ns - st0.wal_sync_ns;
    snprintf(m, sizeof m, "%s_fsync_us_mean", name);
    metric(m, rounds > 0 ? (double)round_ns / 1e3 / (double)rounds : 0, "us");
    snprintf(m, sizeof m, "%s_fsync_us_max", name);
    metric(m, (double)st.wal_sync_max_ns / 1e3, "us");
    snprintf(m, sizeof m, "%s_fsync_share", name);
    metric(m, load_s > 0 ? (double)round_ns / 1e9 / load_s : 0, "x");
    snprintf(m, sizeof m, "%s_busy_retries", name);
    metric(m, (double)atomic_load(&r.busy), "count");
    snprintf(m, sizeof m, "%s_rss_anon_max_mb", name);
    metric(m, (double)max_kb / 1024, "MiB");
    snprintf(m, sizeof m, "%s_rss_anon_base_mb", name);
    metric(m, (double)base_kb / 1024, "MiB");
    snprintf(m, sizeof m, "%s_memtable_budget_mb", name);
    metric(m, (double)memtable_mb, "MiB");
    if (r.lat_us != NULL && done > 0) {
        /* Records past the deadline were never put; only the first `done` indexes are filled
         * when the load completed, so percentiles are taken over completed runs only. */
        if (done == records) {
            qsort(r.lat_us, records, sizeof *r.lat_us, cmp_u32);
            snprintf(m, sizeof m, "%s_p50_us", name);
            metric(m, r.lat_us[records / 2], "us");
            snprintf(m, sizeof m, "%s_p99_us", name);
            metric(m, r.lat_us[records * 99 / 100], "us");
        }
        free(r.lat_us);
    }
    close_and_remove(ns, o, path);
}

/* --- gets --------------------------------------------------------------------------------------
 */

struct get_run {
    struct ud_ns *ns;
    uint64_t records;
    uint64_t gets; /* per thread */
    size_t value_size;
    atomic_uint_fast64_t seed; /* each thread draws its own index sequence */
    atomic_uint_fast64_t bad;
    atomic_uint_fast64_t cpu_ns; /* the get threads' CPU time of the last pass */
};

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *get_worker(void *arg)
{
    struct get_run *g = arg;
    struct ud_buf buf = {0};
    uint64_t rng = splitmix64(atomic_fetch_add(&g->seed, 1)) | 1;
    uint64_t bad = 0;
    uint64_t cpu0 = thread_cpu_ns();
    for (uint64_t n = 0; n < g->gets; n++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        uint64_t i = rng % g->records;
        char key[KEY_LEN + 1];
        make_key(i, key);
        int rc = ud_ns_kv_get(g->ns, key, KEY_LEN, &buf, NULL);
        if (rc != 0)
            die("ud_ns_kv_get", rc, key);
        uint64_t stamp;
        memcpy(&stamp, buf.data, sizeof stamp);
        bad += buf.len != g->value_size || stamp != i;
    }
    atomic_fetch_add(&g->cpu_ns, thread_cpu_ns() - cpu0);
    ud_buf_free(&buf);
    atomic_fetch_add(&g->bad, bad);
    return NULL;
}

static double get_pass(struct get_run *g, uint32_t threads)
{
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (tids == NULL)
        die("calloc", UD_ENOMEM, NULL);
    uint64_t t0 = ud_mono_ns();
    atomic_store(&g->cpu_ns, 0);
    for (uint32_t t = 0; t < threads; t++)
        if (pthread_create(&tids[t], NULL, get_worker, g) != 0)
            die("pthread_create", UD_ENOMEM, NULL);
    for (uint32_t t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    double s = secs_since(t0);
    free(tids);
    if (atomic_load(&g->bad) != 0) {
        fprintf(stderr, "bench_engine: %" PRIu64 " gets returned a wrong value\n",
                (uint64_t)atomic_load(&g->bad));
        exit(1);
    }
    return (double)(g->gets * threads) / s;
}

static int count_kv(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len, uint64_t lsn)
{
    (void)key;
    (void)key_len;
    (void)value;
    (void)value_len;
    (void)lsn;
    ++*(uint64_t *)arg;
    return 0;
}

/* One ordered scan of every key before timing gets. The first touch of each LMDB page costs a
 * page fault on the mapping, once per process; bench_lmdb warms its env the same way, so both sides
 * are measured in the steady state of a long-running server. Returns the keys seen. */
static uint64_t warm_scan(struct ud_ns *ns)
{
    struct ud_buf next = {0};
    uint64_t seen = 0;
    for (;;) {
        uint8_t start[UD_MAX_KEY];
        size_t start_len = next.len;
        if (start_len > 0)
            memcpy(start, next.data, start_len);
        struct ud_scan sc = {.start = start, .start_len = start_len, .limit = 1000};
        int rc = ud_ns_kv_scan(ns, &sc, count_kv, &seen, &next);
        if (rc != 0)
            die("ud_ns_kv_scan", rc, NULL);
        if (next.len == 0)
            break;
    }
    ud_buf_free(&next);
    return seen;
}

/*
 * get: loads `records` keys (sync none, 64 MiB memtable), waits until the sealed memtables are in
 * LMDB, so most keys are flushed and the newest stay in the active memtable, as on a live server;
 * then random gets. get-flushed: the same after ud_ns_flush (every key in LMDB), the figure that
 * compares directly with bench_lmdb's mdb_get.
 */
static void run_get(const struct options *o)
{
    uint64_t records = o->records ? o->records : 1000000;
    uint64_t gets = o->gets ? o->gets : records;
    uint32_t threads = o->threads ? o->threads : 1;
    uint64_t memtable_mb = o->memtable_mb ? o->memtable_mb : 64;
    printf("# get records=%" PRIu64 " gets=%" PRIu64
           " threads=%u value_size=%zu memtable_mb=%" PRIu64 "\n",
           records, gets, threads, o->value_size, memtable_mb);
    char path[4096];
    struct ud_ns *ns = open_fresh(o, "get", UD_WAL_SYNC_NONE, memtable_mb, path);
    struct put_run r = {.ns = ns, .records = records, .value_size = o->value_size};
    r.deadline = ud_mono_ns() + o->max_seconds * 1000000000ull;
    double load_s = put_load(&r, 1);
    if (atomic_load(&r.done) != records) {
        fprintf(stderr, "bench_engine: get: load hit the time limit\n");
        exit(1);
    }
    metric("get_load_rate", (double)records / load_s, "records/s");

    struct ud_ns_stats st;
    uint64_t t0 = ud_mono_ns();
    for (;;) {
        ud_ns_stats(ns, &st);
        if (st.sealed_memtables == 0 || secs_since(t0) > 300)
            break;
        sleep_ms(5);
    }
    print_stats(ns, "before gets");
    metric("get_memtable_fraction", (double)(st.last_lsn - st.flushed_lsn) / (double)records,
           "ratio");
    if (warm_scan(ns) != records)
        die("warm scan: key count", UD_ECORRUPT, NULL);

    struct get_run g = {.ns = ns,
                        .records = records,
                        .gets = gets / threads,
                        .value_size = o->value_size,
                        .seed = 1};
    metric("get_rate", get_pass(&g, threads), "gets/s");
    /* CPU per get is steadier than the rate on a shared machine (the rate counts time off CPU). */
    metric("get_cpu_us", (double)atomic_load(&g.cpu_ns) / 1e3 / (double)(g.gets * threads), "us");

    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_ns_flush(ns, errmsg);
    if (rc != 0)
        die("ud_ns_flush", rc, errmsg);
    print_stats(ns, "after flush");
    warm_scan(ns);
    metric("get_flushed_rate", get_pass(&g, threads), "gets/s");
    metric("get_flushed_cpu_us", (double)atomic_load(&g.cpu_ns) / 1e3 / (double)(g.gets * threads),
           "us");
    close_and_remove(ns, o, path);
}

/* --- main --------------------------------------------------------------------------------------
 */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_engine --dir DIR [--mode put-none|put-sustained|put-always|get|all]\n"
            "                    [--records N] [--gets N] [--threads N] [--value-size BYTES]\n"
            "                    [--memtable-mb N] [--flush-txn-mb N] [--max-seconds S]\n"
            "                    [--sample-ms MS] [--keep]\n"
            "defaults per mode (records / threads / memtable):\n"
            "  put-none       300000 / 1 / sized so nothing flushes   sync none\n"
            "  put-sustained 5000000 / 1 / 64 MiB                     sync none\n"
            "  put-always     300000 / 64 / 64 MiB                    sync always\n"
            "  get           1000000 / 1 / 64 MiB   (gets: as many as records)\n"
            "Prints `metric=NAME value=X unit=U` lines; lines starting with # are context.\n"
            "Each mode uses a fresh namespace in DIR/MODE, removed afterwards unless --keep.\n");
}

static uint64_t parse_u64(const char *s, const char *opt)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        fprintf(stderr, "bench_engine: %s: not a number: %s\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    struct options o = {.mode = "all", .value_size = 1024, .max_seconds = 300, .sample_ms = 10};
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"dir", required_argument, NULL, 'd'},
        {"records", required_argument, NULL, 'n'},
        {"gets", required_argument, NULL, 'g'},
        {"threads", required_argument, NULL, 't'},
        {"value-size", required_argument, NULL, 'v'},
        {"memtable-mb", required_argument, NULL, 'M'},
        {"flush-txn-mb", required_argument, NULL, 'F'},
        {"max-seconds", required_argument, NULL, 'T'},
        {"sample-ms", required_argument, NULL, 's'},
        {"keep", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.mode = optarg;
            break;
        case 'd':
            o.dir = optarg;
            break;
        case 'n':
            o.records = parse_u64(optarg, "--records");
            break;
        case 'g':
            o.gets = parse_u64(optarg, "--gets");
            break;
        case 't':
            o.threads = (uint32_t)parse_u64(optarg, "--threads");
            break;
        case 'v':
            o.value_size = parse_u64(optarg, "--value-size");
            break;
        case 'M':
            o.memtable_mb = parse_u64(optarg, "--memtable-mb");
            break;
        case 'F':
            o.flush_txn_mb = parse_u64(optarg, "--flush-txn-mb");
            break;
        case 'T':
            o.max_seconds = parse_u64(optarg, "--max-seconds");
            break;
        case 's':
            o.sample_ms = (uint32_t)parse_u64(optarg, "--sample-ms");
            break;
        case 'k':
            o.keep = 1;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    static const char *const modes[] = {"put-none", "put-sustained", "put-always", "get"};
    int all = strcmp(o.mode, "all") == 0;
    int known = all;
    for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++)
        known |= strcmp(o.mode, modes[k]) == 0;
    /* The stamp takes the value's first 8 bytes; a 1 MiB record limit bounds it above. */
    if (o.dir == NULL || !known || o.value_size < 8 || o.value_size > (1u << 20) ||
        o.sample_ms == 0 || o.max_seconds == 0) {
        usage();
        return 2;
    }
    if (mkdir(o.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_engine: mkdir %s: %s\n", o.dir, strerror(errno));
        return 1;
    }
    g_block = malloc(o.value_size);
    if (g_block == NULL)
        return 1;
    uint64_t fill = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < o.value_size; i++) {
        fill = splitmix64(fill);
        g_block[i] = (uint8_t)fill;
    }

    for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
        if (!all && strcmp(o.mode, modes[k]) != 0)
            continue;
        if (strcmp(modes[k], "get") == 0)
            run_get(&o);
        else
            run_put(&o, modes[k]);
    }
    free(g_block);
    return 0;
}
