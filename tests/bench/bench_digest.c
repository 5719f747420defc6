/*
 * The request digest of a keyed HTTP write (writer/http_digest.c), alone: thread CPU time per
 * ud_http_request_digest call for a PUT of a given body size. The writer computes it on its loop
 * thread, where every other request waits meanwhile (docs/raft.md "Idempotency"). The request is a
 * stand-in with the accessors the digest reads; the digest code is the writer's own. Prints
 * `metric=NAME value=X unit=U` lines like bench_engine: the median and the spread of the rounds.
 *
 *   bench_digest [--body BYTES] [--calls N] [--rounds R]
 */
#include "writer/http_digest.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/http/http.h"

/* What the digest reads of a request: here a plain struct instead of the server's. */
struct ud_http_req {
    const char *path, *query;
    const uint8_t *body;
    size_t body_len;
};

unsigned ud_http_req_method(const struct ud_http_req *r)
{
    (void)r;
    return UD_HTTP_PUT;
}

const char *ud_http_req_path(const struct ud_http_req *r, size_t *len)
{
    *len = strlen(r->path);
    return r->path;
}

const char *ud_http_req_query(const struct ud_http_req *r, size_t *len)
{
    *len = r->query != NULL ? strlen(r->query) : 0;
    return r->query;
}

const uint8_t *ud_http_req_body(const struct ud_http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body;
}

const char *ud_http_req_header(const struct ud_http_req *r, const char *name, size_t *len)
{
    (void)r, (void)name;
    *len = 0;
    return NULL;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t body_len = 1024, calls = 0;
    int rounds = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--body") == 0)
            body_len = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--calls") == 0)
            calls = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_digest: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (rounds < 1 || rounds > 100) {
        fprintf(stderr, "bench_digest: --rounds must be 1..100\n");
        return 2;
    }
    /* About 256 MiB hashed per round unless told: long enough to time, short on a shared box. */
    if (calls == 0)
        calls = body_len >= (256u << 20) ? 1 : (256u << 20) / (body_len + 1);
    uint8_t *body = malloc(body_len + 1);
    if (body == NULL)
        return 1;
    /* Bytes of the size asked (letters A-Z, not JSON): SHA-256 takes as long whatever they are. */
    for (size_t i = 0; i < body_len; i++)
        body[i] = (uint8_t)('A' + i % 26);
    struct ud_http_req r = {"/api/v1/default/kv/bench-key", NULL, body, body_len};
    double per_call[100];
    uint8_t out[UD_COMMAND_DIGEST_SIZE], sink = 0;
    for (int k = 0; k < rounds; k++) {
        uint64_t t0 = thread_cpu_ns();
        for (size_t i = 0; i < calls; i++) {
            body[0] = (uint8_t)i; /* not the same input twice */
            ud_http_request_digest(&r, out);
            sink ^= out[0];
        }
        per_call[k] = (double)(thread_cpu_ns() - t0) / 1e3 / (double)calls;
    }
    qsort(per_call, (size_t)rounds, sizeof per_call[0], cmp_double);
    printf("metric=digest_cpu_per_call body=%zu calls=%zu rounds=%d value=%.3f unit=us "
           "min=%.3f max=%.3f (sink %u)\n",
           body_len, calls, rounds, per_call[rounds / 2], per_call[0], per_call[rounds - 1],
           (unsigned)sink);
    free(body);
    return 0;
}
