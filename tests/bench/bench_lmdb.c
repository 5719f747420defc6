/* Raw LMDB peer of the engine benchmark: the same keys and values through mdb_put and mdb_get. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/clock.h"

/*
 * Keys and values follow the scheme of bench_engine.c so that both programs load the same data:
 * key i is the 16 hex digits of splitmix64(i) (a bijection, so keys are unique and arrive in
 * random order), value i is a fixed random block with i stamped into its first 8 bytes.
 * The engine stores a KV value as `u64le lsn | value` (core/keyspace.h), so the peer stores the
 * same 8 extra bytes: the pages fill exactly as the engine's store pages do.
 */
#define KEY_LEN 16
#define LSN_LEN 8

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Inverse of splitmix64, to recover a record's index from its key. */
static uint64_t unsplitmix64(uint64_t x)
{
    x = (x ^ (x >> 31) ^ (x >> 62)) * 0x319642B2D24D8EC3ull;
    x = (x ^ (x >> 27) ^ (x >> 54)) * 0x96DE1B173F119089ull;
    x = x ^ (x >> 30) ^ (x >> 60);
    return x - 0x9E3779B97F4A7C15ull;
}

static void make_key(uint64_t i, char out[KEY_LEN + 1])
{
    snprintf(out, KEY_LEN + 1, "%016" PRIx64, splitmix64(i));
}

struct options {
    const char *mode; /* put | get | all */
    const char *dir;
    uint64_t records;
    uint64_t gets;
    size_t value_size;
    uint64_t batch;
    int nosync;
    int sorted;
    int writemap;
    int nordahead;
};

static void usage(void)
{
    fprintf(
        stderr,
        "usage: bench_lmdb --dir DIR [--mode put|get|all] [--records N] [--gets N]\n"
        "                  [--value-size BYTES] [--batch N] [--nosync] [--sorted] [--writemap]\n"
        "                  [--nordahead]\n"
        "  put: N random-order mdb_put in write txns of --batch (default 1000), durable\n"
        "       commits (LMDB's default sync) unless --nosync (then one sync at the end);\n"
        "       --sorted puts each txn's keys in key order (as a memtable flush does);\n"
        "       --writemap opens the env with MDB_WRITEMAP, --nordahead with MDB_NORDAHEAD\n"
        "  get: loads N keys as put does, then --gets (default N) random mdb_get on one\n"
        "       thread, value copied out as the engine does\n");
}

static int check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "bench_lmdb: %s: %s\n", what, mdb_strerror(rc));
        exit(1);
    }
    return rc;
}

static void metric(const char *name, double value, const char *unit)
{
    printf("metric=%s value=%.3f unit=%s\n", name, value, unit);
    fflush(stdout);
}

static uint64_t parse_u64(const char *s, const char *opt)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        fprintf(stderr, "bench_lmdb: %s: not a number: %s\n", opt, s);
        exit(2);
    }
    return v;
}

/* RssAnon of this process in kB. Without MDB_WRITEMAP, the pages a write transaction dirties are
 * malloc'd copies held until commit, so this is where a large transaction's memory shows. */
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

static int cmp_key(const void *a, const void *b)
{
    return memcmp(a, b, KEY_LEN);
}

/*
 * Loads the records in write transactions of opts->batch puts. With --sorted each transaction's
 * keys are put in key order, as the engine's flush writes a memtable. Returns puts per second and
 * the largest RssAnon seen just before a commit (when the transaction's dirty pages peak).
 */
static double load(MDB_env *env, MDB_dbi dbi, const struct options *opts, const uint8_t *block,
                   uint64_t *max_anon_kb)
{
    size_t vlen = LSN_LEN + opts->value_size;
    uint8_t *val = malloc(vlen);
    char(*keys)[KEY_LEN + 1] = calloc(opts->batch, sizeof *keys);
    if (val == NULL || keys == NULL)
        exit(1);
    memcpy(val + LSN_LEN, block, opts->value_size);

    *max_anon_kb = 0;
    uint64_t t0 = ud_mono_ns();
    for (uint64_t i = 0; i < opts->records;) {
        uint64_t n = opts->records - i < opts->batch ? opts->records - i : opts->batch;
        for (uint64_t k = 0; k < n; k++)
            make_key(i + k, keys[k]);
        if (opts->sorted)
            qsort(keys, n, sizeof *keys, cmp_key);
        MDB_txn *txn = NULL;
        check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
        for (uint64_t k = 0; k < n; k++) {
            /* The stamp is the record index, recovered from the key for sorted batches. */
            uint64_t idx = i + k;
            if (opts->sorted)
                idx = unsplitmix64(strtoull(keys[k], NULL, 16));
            uint64_t lsn = idx + 1;
            memcpy(val, &lsn, LSN_LEN);
            memcpy(val + LSN_LEN, &idx, sizeof idx);
            MDB_val key = {KEY_LEN, keys[k]};
            MDB_val data = {vlen, val};
            check(mdb_put(txn, dbi, &key, &data, 0), "mdb_put");
        }
        uint64_t kb = rss_anon_kb();
        if (kb > *max_anon_kb)
            *max_anon_kb = kb;
        check(mdb_txn_commit(txn), "mdb_txn_commit");
        i += n;
    }
    if (opts->nosync)
        check(mdb_env_sync(env, 1), "mdb_env_sync");
    double secs = (double)(ud_mono_ns() - t0) / 1e9;
    free(keys);
    free(val);
    return (double)opts->records / secs;
}

/* One cursor pass over every key before timing gets: the first touch of each page costs a page
 * fault on the mapping, once per process. bench_engine warms its store the same way (a full scan),
 * so both sides are measured in a long-running server's steady state. */
static void warm_scan(MDB_env *env, MDB_dbi dbi, uint64_t records)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin(read)");
    check(mdb_cursor_open(txn, dbi, &cur), "mdb_cursor_open");
    MDB_val key, data;
    uint64_t seen = 0;
    volatile uint8_t sink = 0;
    for (int rc = mdb_cursor_get(cur, &key, &data, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &key, &data, MDB_NEXT)) {
        sink ^= ((const uint8_t *)data.mv_data)[data.mv_size - 1];
        seen++;
    }
    (void)sink;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (seen != records) {
        fprintf(stderr, "bench_lmdb: scan saw %" PRIu64 " keys, expected %" PRIu64 "\n", seen,
                records);
        exit(1);
    }
}

/*
 * Random gets, each value copied into a buffer and its stamp checked (the engine copies too).
 * per_op_txn: one read transaction per get (reset/renew, what a server does per request) instead
 * of one transaction for the whole run (the bare cost of mdb_get). Returns gets per second.
 */
static double gets(MDB_env *env, MDB_dbi dbi, const struct options *opts, int per_op_txn)
{
    uint8_t *buf = malloc(LSN_LEN + opts->value_size);
    if (buf == NULL)
        exit(1);
    MDB_txn *txn = NULL;
    check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin(read)");
    if (per_op_txn)
        mdb_txn_reset(txn); /* renew needs a reset transaction */
    uint64_t rng = 0x2545F4914F6CDD1Dull;
    uint64_t bad = 0;
    uint64_t t0 = ud_mono_ns();
    for (uint64_t n = 0; n < opts->gets; n++) {
        /* xorshift64: the index sequence differs from the load order */
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        uint64_t i = rng % opts->records;
        char k[KEY_LEN + 1];
        make_key(i, k);
        MDB_val key = {KEY_LEN, k};
        MDB_val data;
        if (per_op_txn)
            check(mdb_txn_renew(txn), "mdb_txn_renew");
        check(mdb_get(txn, dbi, &key, &data), "mdb_get");
        memcpy(buf, data.mv_data, data.mv_size);
        uint64_t stamp;
        memcpy(&stamp, buf + LSN_LEN, sizeof stamp);
        bad += data.mv_size != LSN_LEN + opts->value_size || stamp != i;
        if (per_op_txn)
            mdb_txn_reset(txn);
    }
    double secs = (double)(ud_mono_ns() - t0) / 1e9;
    mdb_txn_abort(txn);
    free(buf);
    if (bad != 0) {
        fprintf(stderr, "bench_lmdb: %" PRIu64 " gets returned a wrong value\n", bad);
        exit(1);
    }
    return (double)opts->gets / secs;
}

int main(int argc, char **argv)
{
    struct options opts = {.mode = "all", .records = 1000000, .value_size = 1024, .batch = 1000};
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"dir", required_argument, NULL, 'd'},
        {"records", required_argument, NULL, 'n'},
        {"gets", required_argument, NULL, 'g'},
        {"value-size", required_argument, NULL, 'v'},
        {"batch", required_argument, NULL, 'b'},
        {"nosync", no_argument, NULL, 's'},
        {"sorted", no_argument, NULL, 'o'},
        {"writemap", no_argument, NULL, 'w'},
        {"nordahead", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            opts.mode = optarg;
            break;
        case 'd':
            opts.dir = optarg;
            break;
        case 'n':
            opts.records = parse_u64(optarg, "--records");
            break;
        case 'g':
            opts.gets = parse_u64(optarg, "--gets");
            break;
        case 'v':
            opts.value_size = parse_u64(optarg, "--value-size");
            break;
        case 'b':
            opts.batch = parse_u64(optarg, "--batch");
            break;
        case 's':
            opts.nosync = 1;
            break;
        case 'o':
            opts.sorted = 1;
            break;
        case 'w':
            opts.writemap = 1;
            break;
        case 'r':
            opts.nordahead = 1;
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    int do_put = strcmp(opts.mode, "put") == 0 || strcmp(opts.mode, "all") == 0;
    int do_get = strcmp(opts.mode, "get") == 0 || strcmp(opts.mode, "all") == 0;
    if (opts.dir == NULL || (!do_put && !do_get) || opts.records == 0 || opts.batch == 0 ||
        opts.value_size < sizeof(uint64_t)) {
        usage();
        return 2;
    }
    if (opts.gets == 0)
        opts.gets = opts.records;
    if (mkdir(opts.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_lmdb: mkdir %s: %s\n", opts.dir, strerror(errno));
        return 1;
    }

    uint8_t *block = malloc(opts.value_size);
    if (block == NULL)
        return 1;
    uint64_t fill = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < opts.value_size; i++) {
        fill = splitmix64(fill);
        block[i] = (uint8_t)fill;
    }

    /* Flags as the engine's store opens its env: MDB_NOTLS, named sub-databases. The map is sized
     * up front (without MDB_WRITEMAP the file only grows to the pages in use), so no resize
     * happens inside the timed load. */
    MDB_env *env = NULL;
    check(mdb_env_create(&env), "mdb_env_create");
    uint64_t map = opts.records * (KEY_LEN + LSN_LEN + opts.value_size + 64) * 2 + (1ull << 30);
    check(mdb_env_set_mapsize(env, map), "mdb_env_set_mapsize");
    check(mdb_env_set_maxdbs(env, 8), "mdb_env_set_maxdbs");
    check(mdb_env_open(env, opts.dir,
                       MDB_NOTLS | (opts.nosync ? MDB_NOSYNC : 0) |
                           (opts.writemap ? MDB_WRITEMAP : 0) |
                           (opts.nordahead ? MDB_NORDAHEAD : 0),
                       0644),
          "mdb_env_open");
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    check(mdb_txn_begin(env, NULL, 0, &txn), "mdb_txn_begin");
    check(mdb_dbi_open(txn, "kv", MDB_CREATE, &dbi), "mdb_dbi_open");
    check(mdb_txn_commit(txn), "mdb_txn_commit");

    printf("# bench_lmdb records=%" PRIu64 " value_size=%zu batch=%" PRIu64
           " sync=%s order=%s writemap=%d nordahead=%d\n",
           opts.records, opts.value_size, opts.batch, opts.nosync ? "end" : "commit",
           opts.sorted ? "sorted" : "random", opts.writemap, opts.nordahead);
    uint64_t max_anon_kb = 0;
    double put_rate = load(env, dbi, &opts, block, &max_anon_kb);
    if (do_put) {
        metric("lmdb_put_rate", put_rate, "records/s");
        metric("lmdb_put_rss_anon_max_mb", (double)max_anon_kb / 1024, "MiB");
    }
    if (do_get) {
        warm_scan(env, dbi, opts.records);
        metric("lmdb_get_rate", gets(env, dbi, &opts, 0), "gets/s");
        metric("lmdb_get_txn_per_op_rate", gets(env, dbi, &opts, 1), "gets/s");
    }
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(env, &info);
    mdb_env_stat(env, &st);
    printf("# lmdb pages_used=%zu page_size=%u\n", info.me_last_pgno + 1, st.ms_psize);

    mdb_env_close(env);
    free(block);
    return 0;
}
