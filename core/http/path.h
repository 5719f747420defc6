/*
 * Request paths and query strings of the HTTP API, as plain functions (no h2o): percent-decoding,
 * route patterns matched against the raw path, query parameters, column lists, and backup paths
 * confined to a root directory.
 *
 * Keys come from the raw path, decoded exactly once (ARCHITECTURE.md section 4): h2o's
 * path_normalized resolves `..` and would turn `kv/a/../b` into `b`.
 */
#ifndef UD_CORE_HTTP_PATH_H
#define UD_CORE_HTTP_PATH_H

#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"

/*
 * Percent-decodes in[0..len) into out (at least len bytes; may equal in). '+' is kept as is (RFC
 * 3986, not form encoding). Every '%' must be followed by two hex digits. Returns 0 and *outlen,
 * or UD_EINVAL (errmsg names the offset).
 */
int ud_http_pct_decode(const char *in, size_t len, uint8_t *out, size_t *outlen, char *errmsg);

/* Maximum parameters captured by one route pattern. */
#define UD_HTTP_MAX_PARAMS 4

/* Raw (still percent-encoded) path pieces captured by a pattern, in pattern order. */
struct ud_http_params {
    size_t n;
    struct {
        const char *name; /* points into the pattern, name_len bytes, without braces or '*' */
        size_t name_len;
        const char *raw; /* points into the path */
        size_t len;
    } v[UD_HTTP_MAX_PARAMS];
};

/*
 * Matches a raw path (without the query) against a pattern of '/'-separated segments: literals,
 * "{name}" (one non-empty segment) and at most one "{name*}" (the rest: zero or more characters,
 * slashes included; literal segments after it must match the path's last segments, and then the
 * rest is non-empty). Returns 1 and fills *p on a match, 0 otherwise.
 * Example: "/api/v1/{ns}/row/{key*}/columns" matches "/api/v1/d/row/a/b/columns" with key "a/b".
 */
int ud_http_route_match(const char *pattern, const char *path, size_t len,
                        struct ud_http_params *p);

/* The raw value of parameter name (NUL-terminated) in *raw and *len: 1 found, 0 absent. */
int ud_http_param(const struct ud_http_params *p, const char *name, const char **raw, size_t *len);

/*
 * Finds name in a raw query string (without '?', pairs separated by '&', a pair without '=' has
 * an empty value). Returns 1 and the raw value, or 0 when absent. The first occurrence wins.
 */
int ud_http_query_raw(const char *query, size_t qlen, const char *name, const char **raw,
                      size_t *len);

/*
 * Decodes query parameter name into out (cap bytes): 0 with *outlen, UD_ENOTFOUND (absent),
 * UD_EINVAL (bad percent escape), UD_ELIMIT (longer than cap). errmsg names the parameter.
 */
int ud_http_query_get(const char *query, size_t qlen, const char *name, uint8_t *out, size_t cap,
                      size_t *outlen, char *errmsg);

/* Parses an unsigned decimal query parameter: 0 (*v set), UD_ENOTFOUND, UD_EINVAL (not a number in
 * [min, max]; errmsg says so). */
int ud_http_query_u64(const char *query, size_t qlen, const char *name, uint64_t min, uint64_t max,
                      uint64_t *v, char *errmsg);

/*
 * Splits a decoded column list "a,b,c" into cols (cap entries; names are views into list, values
 * empty). Empty names ("a,,b", a trailing comma) are rejected. Returns 0 with *n, UD_EINVAL or
 * UD_ELIMIT (more than cap names).
 */
int ud_http_columns_split(const uint8_t *list, size_t len, struct ud_col *cols, size_t cap,
                          size_t *n, char *errmsg);

/*
 * Checks a client-supplied backup path and joins it under root: relative, at most 512 bytes,
 * segments of [A-Za-z0-9._+=@,:-] that are neither "." nor ".." nor empty (so no '%' escapes,
 * backslashes, control bytes or absolute paths). On success writes "root/rel" into out (size
 * bytes) and returns 0; else UD_EINVAL with errmsg naming field and rule.
 */
int ud_http_backup_path(const char *root, const char *rel, const char *field, char *out,
                        size_t size, char *errmsg);

/* Parses a 32-hex-character transaction id (either case). 0 or UD_EINVAL. */
int ud_http_txn_id_parse(const char *hex, size_t len, uint8_t id[16]);
/* Writes 32 lowercase hex characters and a NUL. */
void ud_http_txn_id_format(const uint8_t id[16], char out[33]);

#endif
