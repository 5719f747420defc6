/* Shared helpers of the engine test executables: opening namespaces and collecting reads. */
#ifndef UD_TESTS_ENGINE_HELPERS_H
#define UD_TESTS_ENGINE_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/engine.h"
#include "core/err.h"
#include "tests/lib/testutil.h"

/* AddressSanitizer builds: its quarantine keeps freed memory, so memory bounds are only printed. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

/* Asserts rc == want and prints errmsg on a mismatch (cmocka only shows the numbers). */
#define CHECK_RC(rc, want, errmsg)                                                                 \
    do {                                                                                           \
        int rc_ = (rc);                                                                            \
        if (rc_ != (want))                                                                         \
            print_message("unexpected rc %d (%s), want %d: %s\n", rc_, ud_strerror(rc_),           \
                          (int)(want), (errmsg));                                                  \
        assert_int_equal(rc_, (want));                                                             \
    } while (0)

static inline struct ud_engine_options test_opts(const char *dir)
{
    struct ud_engine_options o;
    memset(&o, 0, sizeof o);
    o.dir = dir;
    o.name = "test";
    /* Durability is the WAL tests' business; these tests exercise logic, so keep fsyncs rare. */
    o.sync_mode = UD_WAL_SYNC_NONE;
    o.segment_size = 4u << 20;
    o.map_size = 64u << 20;
    return o;
}

static inline struct ud_ns *open_ns(const struct ud_engine_options *o)
{
    struct ud_ns *ns = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_open(o, &ns, errmsg), 0, errmsg);
    assert_non_null(ns);
    return ns;
}

static inline void flush_ns(struct ud_ns *ns)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_flush(ns, errmsg), 0, errmsg);
}

static inline void put_kv(struct ud_ns *ns, const void *k, size_t kl, const void *v, size_t vl,
                          uint64_t *lsn)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_kv_put(ns, k, kl, v, vl, lsn, errmsg), 0, errmsg);
}

static inline void put_s(struct ud_ns *ns, const char *k, const char *v)
{
    put_kv(ns, k, strlen(k), v, strlen(v), NULL);
}

static inline void del_s(struct ud_ns *ns, const char *k)
{
    char errmsg[UD_ERRMSG_SIZE] = "";
    CHECK_RC(ud_ns_kv_delete(ns, k, strlen(k), NULL, errmsg), 0, errmsg);
}

/* Asserts the value of k, or absence when want is NULL. */
static inline void expect_kv(struct ud_ns *ns, const char *k, const char *want)
{
    struct ud_buf b = {0};
    int rc = ud_ns_kv_get(ns, k, strlen(k), &b, NULL);
    if (want == NULL) {
        if (rc != UD_ENOTFOUND)
            print_message("key %s: expected absent, got rc %d\n", k, rc);
        assert_int_equal(rc, UD_ENOTFOUND);
    } else {
        if (rc != 0)
            print_message("key %s: expected \"%s\", got rc %d\n", k, want, rc);
        assert_int_equal(rc, 0);
        assert_int_equal(b.len, strlen(want));
        assert_memory_equal(b.data, want, b.len);
    }
    ud_buf_free(&b);
}

/* A row's visible columns rendered as "name=value;" in callback order. */
struct row_text {
    char s[4096];
    size_t n;
};

static inline int row_text_cb(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                              size_t value_len, uint64_t lsn)
{
    (void)lsn;
    struct row_text *t = arg;
    t->n += (size_t)snprintf(t->s + t->n, sizeof t->s - t->n, "%.*s=%.*s;", (int)name_len,
                             (const char *)name, (int)value_len, (const char *)value);
    return 0;
}

/* Reads row (all columns, or the ncols names given) into text; returns the rc. */
static inline int read_row(struct ud_ns *ns, const char *row, const char **names, size_t ncols,
                           struct row_text *t)
{
    struct ud_col cols[16];
    for (size_t i = 0; i < ncols; i++)
        cols[i] = (struct ud_col){(const uint8_t *)names[i], strlen(names[i]), NULL, 0};
    struct ud_row r = {(const uint8_t *)row, strlen(row), cols, ncols};
    t->n = 0;
    t->s[0] = '\0';
    return ud_ns_row_get(ns, &r, row_text_cb, t);
}

static inline void expect_row(struct ud_ns *ns, const char *row, const char *want)
{
    struct row_text t;
    int rc = read_row(ns, row, NULL, 0, &t);
    if (want == NULL) {
        if (rc != UD_ENOTFOUND)
            print_message("row %s: expected absent, got rc %d: %s\n", row, rc, t.s);
        assert_int_equal(rc, UD_ENOTFOUND);
        return;
    }
    if (rc != 0 || strcmp(t.s, want) != 0)
        print_message("row %s: expected \"%s\", got rc %d \"%s\"\n", row, want, rc, t.s);
    assert_int_equal(rc, 0);
    assert_string_equal(t.s, want);
}

/* Puts columns given as "name", "value", ... NULL. */
static inline uint64_t put_row(struct ud_ns *ns, const char *row, ...)
{
    struct ud_col cols[16];
    size_t n = 0;
    va_list ap;
    va_start(ap, row);
    for (const char *name; (name = va_arg(ap, const char *)) != NULL;) {
        const char *value = va_arg(ap, const char *);
        cols[n++] = (struct ud_col){(const uint8_t *)name, strlen(name), (const uint8_t *)value,
                                    strlen(value)};
    }
    va_end(ap);
    struct ud_row r = {(const uint8_t *)row, strlen(row), cols, n};
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn = 0;
    CHECK_RC(ud_ns_row_put(ns, &r, &lsn, errmsg), 0, errmsg);
    return lsn;
}

/* Deletes the named columns ("name", ..., NULL), or the whole row when none. */
static inline uint64_t del_row(struct ud_ns *ns, const char *row, ...)
{
    struct ud_col cols[16];
    size_t n = 0;
    va_list ap;
    va_start(ap, row);
    for (const char *name; (name = va_arg(ap, const char *)) != NULL;)
        cols[n++] = (struct ud_col){(const uint8_t *)name, strlen(name), NULL, 0};
    va_end(ap);
    struct ud_row r = {(const uint8_t *)row, strlen(row), cols, n};
    char errmsg[UD_ERRMSG_SIZE] = "";
    uint64_t lsn = 0;
    CHECK_RC(ud_ns_row_delete(ns, &r, &lsn, errmsg), 0, errmsg);
    return lsn;
}

#endif
