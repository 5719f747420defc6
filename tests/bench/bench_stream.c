/*
 * Replication lag benchmark (docs/benchmarks.md "Replication").
 *
 * Writes 1 KB values to a writer over HTTP/1.1 at a fixed rate from a few keep-alive connections
 * and, at the same time, holds N subscribers on `GET /api/v1/{ns}/wal/stream` of one or more
 * upstreams (the writer itself, or relayers further down a tree). The lag of a record at a
 * subscriber is the time from the writer's acknowledgement of the write (its HTTP response) to
 * the record's arrival in that subscriber's stream, fully verified by the stream parser; arrivals
 * before the acknowledgement count as 0. Reports p50/p99/max over every (subscriber, record) pair,
 * records that never arrived, the write rate achieved, bytes delivered, and the upstream's memory
 * per subscriber (RssAnon growth of --upstream-pid while the subscribers connect).
 *
 * One epoll thread serves all subscribers (so 1000 of them cost this tool little), one thread
 * per writer connection paces the writes on an absolute schedule.
 *
 *   bench_stream --writer 127.0.0.1:4000 --stream 127.0.0.1:4000[,127.0.0.1:4001...]
 *                [--ns default] [--subscribers 100] [--rate 2000] [--seconds 10]
 *                [--value-size 1024] [--connections 4] [--upstream-pid PID]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "proto/stream.h"

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_stream: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void metric(const char *name, double value, const char *unit)
{
    printf("metric=%s value=%.3f unit=%s\n", name, value, unit);
    fflush(stdout);
}

/* ---- options and addresses ---- */

struct options {
    struct sockaddr_in writer;
    struct sockaddr_in streams[64];
    int nstreams;
    const char *ns;
    int subscribers;
    double rate;
    double seconds;
    int value_size;
    int connections;
    int upstream_pid;
};

static struct sockaddr_in parse_addr(const char *s)
{
    if (strncmp(s, "http://", 7) == 0)
        s += 7;
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof host)
        die("bad address %s (want host:port)", s);
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
        die("bad IPv4 address in %s", s);
    return a;
}

static int connect_to(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) != 0)
        die("connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

static long rss_anon_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* ---- acknowledgements, indexed by LSN - base ---- */

static uint64_t base_lsn; /* LSNs above it are the benchmark's */
static size_t max_records;
static _Atomic uint64_t *ack_ns; /* 0: not acknowledged (yet) */
static _Atomic uint64_t last_acked;
static _Atomic int stop_writes, stop_subscribers;

/* ---- writers: HTTP/1.1 keep-alive PUTs ---- */

static char *put_body;
static size_t put_body_len;

/* Sends one PUT and reads its response on fd; returns the LSN (0 on a non-200 answer). */
static uint64_t put_once(int fd, const char *ns, const char *key)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "PUT /api/v1/%s/kv/%s HTTP/1.1\r\nHost: bench\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     ns, key, put_body_len);
    write_all(fd, head, (size_t)n);
    write_all(fd, put_body, put_body_len);
    char buf[4096];
    size_t len = 0;
    char *end = NULL;
    while (end == NULL) {
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            die("writer connection closed: %s", r < 0 ? strerror(errno) : "EOF");
        len += (size_t)r;
        buf[len] = 0;
        end = strstr(buf, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end + 4 - buf);
    const char *cl = strcasestr(buf, "content-length:");
    if (cl == NULL || cl > end)
        die("response without content-length: %.200s", buf);
    size_t body = (size_t)strtoul(cl + 15, NULL, 10);
    while (len < hlen + body) {
        if (hlen + body >= sizeof buf)
            die("response too large: %.200s", buf);
        ssize_t r = read(fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            die("writer connection closed: %s", r < 0 ? strerror(errno) : "EOF");
        len += (size_t)r;
        buf[len] = 0;
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "bench_stream: PUT %s: %.300s\n", key, buf);
        return 0;
    }
    const char *l = strstr(buf + hlen, "\"lsn\":");
    return l != NULL ? strtoull(l + 6, NULL, 10) : 0;
}

struct writer {
    pthread_t thread;
    const struct options *o;
    int id;
    uint64_t done, failed;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    int fd = connect_to(&w->o->writer);
    double interval_ns = 1e9 * w->o->connections / w->o->rate;
    uint64_t t0 = ud_mono_ns();
    for (uint64_t i = 0; !atomic_load(&stop_writes); i++) {
        uint64_t due = t0 + (uint64_t)(interval_ns * (double)i);
        uint64_t now = ud_mono_ns();
        if (due > now) {
            struct timespec ts = {(time_t)((due - now) / 1000000000u),
                                  (long)((due - now) % 1000000000u)};
            nanosleep(&ts, NULL);
        }
        char key[64];
        snprintf(key, sizeof key, "bench-%d-%llu", w->id, (unsigned long long)i);
        uint64_t lsn = put_once(fd, w->o->ns, key);
        uint64_t t = ud_mono_ns();
        if (lsn == 0) {
            w->failed++;
            continue;
        }
        w->done++;
        if (lsn > base_lsn && lsn - base_lsn <= max_records)
            atomic_store(&ack_ns[lsn - base_lsn - 1], t);
        uint64_t prev = atomic_load(&last_acked);
        while (lsn > prev && !atomic_compare_exchange_weak(&last_acked, &prev, lsn))
            ;
    }
    close(fd);
    return NULL;
}

/* ---- subscribers: one epoll thread, HTTP/1.1 chunked decoding, the stream parser ---- */

enum chunk_state { CH_SIZE, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_END };

struct subscriber {
    int fd;
    int headers_done;
    int chunked;
    char head[4096];
    size_t head_len;
    enum chunk_state ch;
    uint64_t chunk_left;
    struct ud_stream_parser *parser;
    uint64_t *recv_ns; /* per LSN - base - 1 */
    uint64_t records, heartbeats, bytes;
    int failed;
};

static struct subscriber *subs;
static int nsubs;
static _Atomic int subs_ready;

static void sub_fail(struct subscriber *s, const char *why)
{
    if (!s->failed)
        fprintf(stderr, "bench_stream: subscriber %ld: %s\n", (long)(s - subs), why);
    s->failed = 1;
}

static void sub_stream_bytes(struct subscriber *s, const uint8_t *p, size_t n)
{
    if (ud_stream_parser_feed(s->parser, p, n) != 0) {
        sub_fail(s, "out of memory");
        return;
    }
    uint64_t now = ud_mono_ns();
    for (;;) {
        enum ud_stream_event ev;
        struct ud_stream_record rec;
        struct ud_stream_heartbeat hb;
        char errmsg[UD_ERRMSG_SIZE];
        if (ud_stream_parser_next(s->parser, &ev, &rec, &hb, errmsg) != 0) {
            sub_fail(s, errmsg);
            return;
        }
        if (ev == UD_STREAM_NEED_MORE)
            return;
        if (ev == UD_STREAM_EV_HEARTBEAT) {
            s->heartbeats++;
            continue;
        }
        s->records++;
        if (rec.lsn > base_lsn && rec.lsn - base_lsn <= max_records)
            s->recv_ns[rec.lsn - base_lsn - 1] = now;
    }
}

/* Undoes HTTP/1.1 chunked transfer coding. */
static void sub_body_bytes(struct subscriber *s, const uint8_t *p, size_t n)
{
    if (!s->chunked) {
        sub_stream_bytes(s, p, n);
        return;
    }
    size_t i = 0;
    while (i < n && !s->failed) {
        switch (s->ch) {
        case CH_SIZE: {
            uint8_t c = p[i++];
            if (c == '\r') {
                s->ch = CH_SIZE_LF;
            } else if (c >= '0' && c <= '9') {
                s->chunk_left = s->chunk_left * 16 + (uint64_t)(c - '0');
            } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
                s->chunk_left = s->chunk_left * 16 + (uint64_t)((c | 0x20) - 'a' + 10);
            } else if (c != ';' && c != ' ') {
                sub_fail(s, "bad chunk size");
            }
            break;
        }
        case CH_SIZE_LF:
            if (p[i++] != '\n')
                sub_fail(s, "bad chunk size line");
            s->ch = s->chunk_left == 0 ? CH_END : CH_DATA;
            if (s->ch == CH_END)
                sub_fail(s, "the stream ended");
            break;
        case CH_DATA: {
            size_t take = n - i < s->chunk_left ? n - i : (size_t)s->chunk_left;
            sub_stream_bytes(s, p + i, take);
            i += take;
            s->chunk_left -= take;
            if (s->chunk_left == 0)
                s->ch = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (p[i++] != '\r')
                sub_fail(s, "chunk without CRLF");
            s->ch = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (p[i++] != '\n')
                sub_fail(s, "chunk without CRLF");
            s->ch = CH_SIZE;
            break;
        case CH_END:
            return;
        }
    }
}

static void sub_bytes(struct subscriber *s, const uint8_t *p, size_t n)
{
    s->bytes += n;
    if (s->headers_done) {
        sub_body_bytes(s, p, n);
        return;
    }
    size_t room = sizeof s->head - 1 - s->head_len;
    size_t take = n < room ? n : room;
    memcpy(s->head + s->head_len, p, take);
    s->head_len += take;
    s->head[s->head_len] = 0;
    char *end = strstr(s->head, "\r\n\r\n");
    if (end == NULL) {
        if (s->head_len == sizeof s->head - 1)
            sub_fail(s, "response headers too long");
        return;
    }
    if (strncmp(s->head, "HTTP/1.1 200", 12) != 0) {
        char why[300];
        snprintf(why, sizeof why, "stream refused: %.250s", s->head);
        sub_fail(s, why);
        return;
    }
    s->headers_done = 1;
    atomic_fetch_add(&subs_ready, 1);
    s->chunked = strcasestr(s->head, "transfer-encoding: chunked") != NULL;
    size_t hlen = (size_t)(end + 4 - s->head);
    size_t rest = s->head_len - hlen;
    /* Body bytes that came with the headers: they are the last `rest` of what was taken, and
     * whatever did not fit in head follows in p. */
    sub_body_bytes(s, p + (take - rest), n - (take - rest));
}

static void *subscribers_main(void *arg)
{
    int ep = *(int *)arg;
    static uint8_t buf[1 << 18];
    struct epoll_event evs[256];
    while (!atomic_load(&stop_subscribers)) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            struct subscriber *s = evs[i].data.ptr;
            for (;;) {
                ssize_t r = read(s->fd, buf, sizeof buf);
                if (r > 0) {
                    sub_bytes(s, buf, (size_t)r);
                    if ((size_t)r < sizeof buf)
                        break;
                    continue;
                }
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                sub_fail(s, r == 0 ? "connection closed by the upstream" : strerror(errno));
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                break;
            }
        }
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_stream --writer HOST:PORT --stream HOST:PORT[,HOST:PORT...] "
                    "[--ns NAME] [--subscribers N] [--rate W] [--seconds S] [--value-size B] "
                    "[--connections C] [--upstream-pid PID]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct options o = {.ns = "default",
                        .subscribers = 100,
                        .rate = 2000,
                        .seconds = 10,
                        .value_size = 1024,
                        .connections = 16};
    int have_writer = 0;
    static const struct option longopts[] = {{"writer", required_argument, NULL, 'w'},
                                             {"stream", required_argument, NULL, 's'},
                                             {"ns", required_argument, NULL, 'n'},
                                             {"subscribers", required_argument, NULL, 'N'},
                                             {"rate", required_argument, NULL, 'r'},
                                             {"seconds", required_argument, NULL, 't'},
                                             {"value-size", required_argument, NULL, 'v'},
                                             {"connections", required_argument, NULL, 'c'},
                                             {"upstream-pid", required_argument, NULL, 'p'},
                                             {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'w':
            o.writer = parse_addr(optarg);
            have_writer = 1;
            break;
        case 's':
            for (char *tok = strtok(optarg, ","); tok != NULL && o.nstreams < 64;
                 tok = strtok(NULL, ","))
                o.streams[o.nstreams++] = parse_addr(tok);
            break;
        case 'n':
            o.ns = optarg;
            break;
        case 'N':
            o.subscribers = atoi(optarg);
            break;
        case 'r':
            o.rate = atof(optarg);
            break;
        case 't':
            o.seconds = atof(optarg);
            break;
        case 'v':
            o.value_size = atoi(optarg);
            break;
        case 'c':
            o.connections = atoi(optarg);
            break;
        case 'p':
            o.upstream_pid = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (!have_writer || o.nstreams == 0 || o.subscribers < 0 || o.rate <= 0 || o.seconds <= 0 ||
        o.value_size < 1 || o.connections < 1)
        usage();

    /* One descriptor per subscriber and writer connection, plus slack. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    /* The value: value_size bytes, base64-encoded in the JSON body. */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t b64 = 4 * (((size_t)o.value_size + 2) / 3);
    put_body = malloc(b64 + 32);
    strcpy(put_body, "{\"value\":\"");
    size_t off = strlen(put_body), pos = off;
    for (int i = 0; i < o.value_size; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)(i * 7) << 16;
        if (i + 1 < o.value_size)
            v |= (uint32_t)(uint8_t)((i + 1) * 7) << 8;
        if (i + 2 < o.value_size)
            v |= (uint8_t)((i + 2) * 7);
        put_body[pos++] = alphabet[v >> 18 & 63];
        put_body[pos++] = alphabet[v >> 12 & 63];
        put_body[pos++] = i + 1 < o.value_size ? alphabet[v >> 6 & 63] : '=';
        put_body[pos++] = i + 2 < o.value_size ? alphabet[v & 63] : '=';
    }
    strcpy(put_body + off + b64, "\"}");
    put_body_len = off + b64 + 2;

    /* The base LSN: a first write tells where the namespace's log is. */
    int wfd = connect_to(&o.writer);
    base_lsn = put_once(wfd, o.ns, "bench-base");
    close(wfd);
    if (base_lsn == 0)
        die("the first write to namespace %s failed", o.ns);
    max_records = (size_t)(o.rate * o.seconds * 1.5) + 1000;
    ack_ns = calloc(max_records, sizeof *ack_ns);

    long rss0 = o.upstream_pid > 0 ? rss_anon_kb(o.upstream_pid) : -1;
    int ep = epoll_create1(0);
    nsubs = o.subscribers;
    subs = calloc((size_t)nsubs + 1, sizeof *subs);
    for (int i = 0; i < nsubs; i++) {
        struct subscriber *s = &subs[i];
        s->fd = connect_to(&o.streams[i % o.nstreams]);
        s->parser = ud_stream_parser_new(base_lsn + 1);
        s->recv_ns = calloc(max_records, sizeof *s->recv_ns);
        if (s->parser == NULL || s->recv_ns == NULL)
            die("%s", "out of memory");
        char req[256];
        int n = snprintf(req, sizeof req,
                         "GET /api/v1/%s/wal/stream?from=%llu HTTP/1.1\r\nHost: bench\r\n\r\n",
                         o.ns, (unsigned long long)base_lsn + 1);
        write_all(s->fd, req, (size_t)n);
        fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
    pthread_t sub_thread;
    pthread_create(&sub_thread, NULL, subscribers_main, &ep);
    uint64_t wait0 = ud_mono_ns();
    while (atomic_load(&subs_ready) < nsubs && ud_mono_ns() - wait0 < 10000000000ull)
        usleep(10000);
    if (atomic_load(&subs_ready) < nsubs)
        die("%s", "not every subscriber got its stream within 10 s");
    usleep(200000);
    long rss1 = o.upstream_pid > 0 ? rss_anon_kb(o.upstream_pid) : -1;

    /* The load. */
    struct writer *ws = calloc((size_t)o.connections, sizeof *ws);
    uint64_t t0 = ud_mono_ns();
    for (int i = 0; i < o.connections; i++) {
        ws[i].o = &o;
        ws[i].id = i;
        pthread_create(&ws[i].thread, NULL, writer_main, &ws[i]);
    }
    usleep((useconds_t)(o.seconds * 1e6));
    atomic_store(&stop_writes, 1);
    uint64_t done = 0, failed = 0;
    for (int i = 0; i < o.connections; i++) {
        pthread_join(ws[i].thread, NULL);
        done += ws[i].done;
        failed += ws[i].failed;
    }
    double load_s = (double)(ud_mono_ns() - t0) / 1e9;
    long rss2 = o.upstream_pid > 0 ? rss_anon_kb(o.upstream_pid) : -1;

    /* Let the subscribers drain: up to 10 s for every acknowledged record to arrive. */
    uint64_t last = atomic_load(&last_acked);
    uint64_t drain0 = ud_mono_ns();
    for (;;) {
        int behind = 0;
        for (int i = 0; i < nsubs; i++)
            if (!subs[i].failed && last > base_lsn && subs[i].recv_ns[last - base_lsn - 1] == 0)
                behind++;
        if (behind == 0 || ud_mono_ns() - drain0 > 10000000000ull)
            break;
        usleep(10000);
    }
    atomic_store(&stop_subscribers, 1);
    pthread_join(sub_thread, NULL);

    /* Lags over every (subscriber, acknowledged record) pair. */
    size_t nrec = last > base_lsn ? (size_t)(last - base_lsn) : 0;
    uint64_t *lags = malloc((nrec * (size_t)nsubs + 1) * sizeof *lags);
    size_t nl = 0;
    uint64_t missing = 0, bytes = 0, sub_failed = 0;
    for (int i = 0; i < nsubs; i++) {
        bytes += subs[i].bytes;
        sub_failed += subs[i].failed != 0;
        for (size_t k = 0; k < nrec; k++) {
            uint64_t a = atomic_load(&ack_ns[k]);
            if (a == 0)
                continue;
            uint64_t r = subs[i].recv_ns[k];
            if (r == 0) {
                missing++;
                continue;
            }
            lags[nl++] = r > a ? r - a : 0;
        }
    }
    qsort(lags, nl, sizeof *lags, cmp_u64);
    printf("subscribers=%d streams=%d rate=%.0f seconds=%.1f value_size=%d connections=%d\n", nsubs,
           o.nstreams, o.rate, o.seconds, o.value_size, o.connections);
    metric("writes_per_s", (double)done / load_s, "1/s");
    metric("write_errors", (double)failed, "count");
    metric("lag_samples", (double)nl, "count");
    metric("lag_p50_ms", nl ? (double)lags[nl / 2] / 1e6 : 0, "ms");
    metric("lag_p99_ms", nl ? (double)lags[(nl * 99) / 100] / 1e6 : 0, "ms");
    metric("lag_max_ms", nl ? (double)lags[nl - 1] / 1e6 : 0, "ms");
    metric("records_missing", (double)missing, "count");
    metric("subscribers_failed", (double)sub_failed, "count");
    metric("delivered_mib_per_s", (double)bytes / load_s / 1048576.0, "MiB/s");
    if (rss0 >= 0 && rss1 >= 0 && nsubs > 0) {
        metric("upstream_rss_anon_kb", (double)rss1, "KiB");
        metric("upstream_kb_per_subscriber", (double)(rss1 - rss0) / nsubs, "KiB");
        if (rss2 >= 0)
            metric("upstream_rss_anon_kb_after_load", (double)rss2, "KiB");
    }
    return missing == 0 && sub_failed == 0 && failed == 0 ? 0 : 1;
}
