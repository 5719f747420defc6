/*
 * Request metrics of the HTTP front end: counts by route and status code and a latency histogram
 * per route, rendered in the Prometheus text exposition format. Plain data, loop thread only.
 */
#ifndef UD_CORE_HTTP_METRICS_H
#define UD_CORE_HTTP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/http/json.h"

#define UD_HTTP_METRICS_ROUTES  64 /* route names, "unmatched" included */
#define UD_HTTP_METRICS_CODES   16 /* distinct status codes kept per route */
#define UD_HTTP_METRICS_BUCKETS 16 /* latency buckets, +Inf excluded */

struct ud_http_route_metrics {
    char name[32];
    struct {
        int code;
        uint64_t count;
    } codes[UD_HTTP_METRICS_CODES];
    size_t ncodes;
    uint64_t buckets[UD_HTTP_METRICS_BUCKETS + 1]; /* non-cumulative; the last is +Inf */
    uint64_t count;
    double sum_seconds;
};

struct ud_http_metrics {
    struct ud_http_route_metrics routes[UD_HTTP_METRICS_ROUTES];
    size_t nroutes;
    uint64_t other_codes; /* requests whose code did not fit in codes[] */
};

/* Upper bounds in seconds of the latency buckets. */
extern const double ud_http_latency_bounds[UD_HTTP_METRICS_BUCKETS];

void ud_http_metrics_init(struct ud_http_metrics *m);
/* Index of route name (added on first use); the last slot takes every name beyond the table. */
size_t ud_http_metrics_route(struct ud_http_metrics *m, const char *name);
/* Counts one answered request. */
void ud_http_metrics_observe(struct ud_http_metrics *m, size_t route, int status,
                             uint64_t latency_ns);
/* Appends unison_http_requests_total and unison_http_request_duration_seconds. */
void ud_http_metrics_render(const struct ud_http_metrics *m, struct ud_jbuf *out);

#endif
