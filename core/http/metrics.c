/* Request counters and latency histograms, and their Prometheus text rendering. */
#include "core/http/metrics.h"

#include <string.h>

const double ud_http_latency_bounds[UD_HTTP_METRICS_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

void ud_http_metrics_init(struct ud_http_metrics *m)
{
    memset(m, 0, sizeof *m);
}

size_t ud_http_metrics_route(struct ud_http_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nroutes; i++)
        if (strcmp(m->routes[i].name, name) == 0)
            return i;
    if (m->nroutes == UD_HTTP_METRICS_ROUTES) {
        /* The table is sized for every route the binaries register; overflow is a bug but must not
         * lose counts: they go to the last route. */
        return UD_HTTP_METRICS_ROUTES - 1;
    }
    size_t i = m->nroutes++;
    strncpy(m->routes[i].name, name, sizeof m->routes[i].name - 1);
    return i;
}

void ud_http_metrics_observe(struct ud_http_metrics *m, size_t route, int status,
                             uint64_t latency_ns)
{
    if (route >= m->nroutes)
        return;
    struct ud_http_route_metrics *r = &m->routes[route];
    size_t i = 0;
    while (i < r->ncodes && r->codes[i].code != status)
        i++;
    if (i == r->ncodes) {
        if (r->ncodes == UD_HTTP_METRICS_CODES) {
            m->other_codes++;
            i = SIZE_MAX;
        } else {
            r->codes[r->ncodes++].code = status;
        }
    }
    if (i != SIZE_MAX)
        r->codes[i].count++;
    double s = (double)latency_ns / 1e9;
    size_t b = 0;
    while (b < UD_HTTP_METRICS_BUCKETS && s > ud_http_latency_bounds[b])
        b++;
    r->buckets[b]++;
    r->count++;
    r->sum_seconds += s;
}

void ud_http_metrics_render(const struct ud_http_metrics *m, struct ud_jbuf *out)
{
    ud_jbuf_lit(out, "# HELP unison_http_requests_total HTTP requests answered, by route and "
                     "status code.\n# TYPE unison_http_requests_total counter\n");
    for (size_t i = 0; i < m->nroutes; i++) {
        const struct ud_http_route_metrics *r = &m->routes[i];
        for (size_t c = 0; c < r->ncodes; c++)
            ud_jbuf_printf(out, "unison_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                           r->name, r->codes[c].code, (unsigned long long)r->codes[c].count);
    }
    if (m->other_codes > 0)
        ud_jbuf_printf(out, "unison_http_requests_total{route=\"other\",code=\"other\"} %llu\n",
                       (unsigned long long)m->other_codes);
    ud_jbuf_lit(out, "# HELP unison_http_request_duration_seconds Time from the request's arrival "
                     "to its answer, by route.\n"
                     "# TYPE unison_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < m->nroutes; i++) {
        const struct ud_http_route_metrics *r = &m->routes[i];
        uint64_t cum = 0;
        for (size_t b = 0; b < UD_HTTP_METRICS_BUCKETS; b++) {
            cum += r->buckets[b];
            ud_jbuf_printf(out,
                           "unison_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                           "%llu\n",
                           r->name, ud_http_latency_bounds[b], (unsigned long long)cum);
        }
        cum += r->buckets[UD_HTTP_METRICS_BUCKETS];
        ud_jbuf_printf(out,
                       "unison_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} "
                       "%llu\n"
                       "unison_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                       "unison_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                       r->name, (unsigned long long)cum, r->name, r->sum_seconds, r->name,
                       (unsigned long long)r->count);
    }
}
