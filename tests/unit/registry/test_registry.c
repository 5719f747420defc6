/* Registry tests: create/list/delete, name rules, isolation between namespaces, reopen, and a
 * delete that waits for the users of a namespace. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/err.h"
#include "core/registry.h"
#include "tests/lib/testutil.h"

static struct ud_engine_options defaults(void)
{
    struct ud_engine_options o;
    memset(&o, 0, sizeof o);
    o.sync_mode = UD_WAL_SYNC_NONE;
    o.segment_size = 1u << 20;
    o.map_size = 16u << 20;
    return o;
}

struct names {
    char v[16][UD_NS_NAME_MAX + 1];
    size_t n;
};

static void collect(void *arg, const char *name)
{
    struct names *ns = arg;
    snprintf(ns->v[ns->n++], sizeof ns->v[0], "%s", name);
}

static void test_names(void **state)
{
    (void)state;
    assert_true(ud_ns_name_valid("default"));
    assert_true(ud_ns_name_valid("A-z_09"));
    char max[UD_NS_NAME_MAX + 2];
    memset(max, 'n', sizeof max);
    max[UD_NS_NAME_MAX] = '\0';
    assert_true(ud_ns_name_valid(max));
    max[UD_NS_NAME_MAX] = 'n';
    max[UD_NS_NAME_MAX + 1] = '\0';
    assert_false(ud_ns_name_valid(max)); /* 65 characters */
    assert_false(ud_ns_name_valid(""));
    assert_false(ud_ns_name_valid(NULL));
    assert_false(ud_ns_name_valid(".."));
    assert_false(ud_ns_name_valid("a/b"));
    assert_false(ud_ns_name_valid("a b"));
    assert_false(ud_ns_name_valid("caf\xc3\xa9"));
}

/* ud_registry_list's count, the list itself succeeding. */
static size_t listed(struct ud_registry *reg, void (*fn)(void *, const char *), void *arg)
{
    size_t n = 12345;
    assert_int_equal(ud_registry_list(reg, fn, arg, &n), 0);
    return n;
}

static void test_create_list_delete(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("registry");
    struct ud_engine_options d = defaults();
    struct ud_registry *reg = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_registry_open(root, &d, &reg, errmsg), 0);
    struct names seen = {0};
    assert_int_equal(listed(reg, collect, &seen), 0);

    assert_int_equal(ud_registry_create(reg, "users", errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "orders", errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "Zeta-1", errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "users", errmsg), UD_EEXIST);
    assert_string_equal(errmsg, "namespace users already exists");
    assert_int_equal(ud_registry_create(reg, "../escape", errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "namespace name \"../escape\" is invalid: names are 1 to 64 "
                                "characters from A-Z, a-z, 0-9, '_' and '-'");
    assert_int_equal(ud_registry_create(reg, "", errmsg), UD_EINVAL);

    seen.n = 0;
    assert_int_equal(listed(reg, collect, &seen), 3);
    assert_string_equal(seen.v[0], "Zeta-1"); /* byte order */
    assert_string_equal(seen.v[1], "orders");
    assert_string_equal(seen.v[2], "users");

    /* Isolation: the same key in two namespaces. */
    struct ud_ns *u = NULL, *o = NULL;
    assert_int_equal(ud_registry_acquire(reg, "users", &u), 0);
    assert_int_equal(ud_registry_acquire(reg, "orders", &o), 0);
    assert_string_equal(ud_ns_name(u), "users");
    uint64_t lu = 0, lo = 0;
    assert_int_equal(ud_ns_kv_put(u, "k", 1, "from-users", 10, &lu, errmsg), 0);
    assert_int_equal(ud_ns_kv_put(o, "k", 1, "from-orders", 11, &lo, errmsg), 0);
    assert_int_equal(lu, 1); /* each namespace has its own LSN sequence */
    assert_int_equal(lo, 1);
    struct ud_buf b = {0};
    assert_int_equal(ud_ns_kv_get(u, "k", 1, &b, NULL), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "from-users", 10);
    assert_int_equal(ud_ns_kv_get(o, "k", 1, &b, NULL), 0);
    assert_memory_equal(b.data, "from-orders", 11);
    ud_registry_release(reg, u);
    ud_registry_release(reg, o);

    assert_int_equal(ud_registry_acquire(reg, "missing", &u), UD_ENOTFOUND);
    assert_int_equal(ud_registry_acquire(reg, "a/b", &u), UD_EINVAL);

    /* Reopen: namespaces and data come back; a stray file and a badly named directory are
     * ignored. */
    ud_registry_close(reg);
    char path[4096];
    snprintf(path, sizeof path, "%s/not a namespace", root);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/file", root);
    FILE *f = fopen(path, "w");
    fclose(f);
    assert_int_equal(ud_registry_open(root, &d, &reg, errmsg), 0);
    seen.n = 0;
    assert_int_equal(listed(reg, collect, &seen), 3);
    assert_int_equal(ud_registry_acquire(reg, "orders", &o), 0);
    assert_int_equal(ud_ns_kv_get(o, "k", 1, &b, NULL), 0);
    assert_memory_equal(b.data, "from-orders", 11);
    ud_registry_release(reg, o);

    /* Delete removes the directory; the name can be created again, empty. */
    assert_int_equal(ud_registry_delete(reg, "orders", errmsg), 0);
    snprintf(path, sizeof path, "%s/orders", root);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(ud_registry_delete(reg, "orders", errmsg), UD_ENOTFOUND);
    assert_string_equal(errmsg, "namespace not found: orders");
    seen.n = 0;
    assert_int_equal(listed(reg, collect, &seen), 2);
    assert_int_equal(ud_registry_create(reg, "orders", errmsg), 0);
    assert_int_equal(ud_registry_acquire(reg, "orders", &o), 0);
    assert_int_equal(ud_ns_kv_get(o, "k", 1, &b, NULL), UD_ENOTFOUND);
    assert_int_equal(ud_registry_acquire(reg, "users", &u), 0);
    assert_int_equal(ud_ns_kv_get(u, "k", 1, &b, NULL), 0);
    ud_registry_release(reg, o);
    ud_registry_release(reg, u);

    ud_buf_free(&b);
    ud_registry_close(reg);
    ud_test_rmtree(root);
    free(root);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;)
        n += de->d_name[0] != '.' || strncmp(de->d_name, ".deleted-", 9) == 0;
    if (d != NULL)
        closedir(d);
    return n;
}

/* A delete never waits for users (it runs on the event loop, where a user may be a stream that
 * needs the loop to finish): the name is free at once, the holder keeps working, and the last
 * release removes the files. */
static void test_delete_does_not_wait_for_users(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("registry-busy");
    struct ud_engine_options d = defaults();
    struct ud_registry *reg = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_registry_open(root, &d, &reg, errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "busy", errmsg), 0);
    struct ud_ns *ns = NULL;
    assert_int_equal(ud_registry_acquire(reg, "busy", &ns), 0);
    assert_int_equal(ud_ns_kv_put(ns, "k", 1, "old", 3, NULL, errmsg), 0);

    assert_int_equal(ud_registry_delete(reg, "busy", errmsg), 0);
    struct ud_ns *again = NULL;
    assert_int_equal(ud_registry_acquire(reg, "busy", &again), UD_ENOTFOUND);
    assert_int_equal(listed(reg, NULL, NULL), 0);
    assert_int_equal(ud_registry_delete(reg, "busy", errmsg), UD_ENOTFOUND);

    /* The holder still reads and writes its (renamed) namespace. */
    struct ud_buf val = {0};
    assert_int_equal(ud_ns_kv_get(ns, "k", 1, &val, NULL), 0);
    assert_memory_equal(val.data, "old", 3);
    assert_int_equal(ud_ns_kv_put(ns, "k2", 2, "v", 1, NULL, errmsg), 0);

    /* A new namespace of the same name starts empty, beside the doomed one. */
    assert_int_equal(ud_registry_create(reg, "busy", errmsg), 0);
    assert_int_equal(ud_registry_acquire(reg, "busy", &again), 0);
    assert_int_equal(ud_ns_kv_get(again, "k", 1, &val, NULL), UD_ENOTFOUND);
    ud_registry_release(reg, again);
    assert_int_equal(count_entries(root), 2);

    /* The last release of the deleted one removes its directory. */
    ud_registry_release(reg, ns);
    assert_int_equal(count_entries(root), 1);
    ud_buf_free(&val);
    ud_registry_close(reg);
    ud_test_rmtree(root);
    free(root);
}

/* A delete interrupted by a crash (renamed, not yet removed) is finished at the next open. */
static void test_interrupted_delete_finished_at_open(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("registry-crash");
    char path[4096];
    snprintf(path, sizeof path, "%s/.deleted-gone-1-1", root);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/.deleted-gone-1-1/file", root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    struct ud_engine_options d = defaults();
    struct ud_registry *reg = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_registry_open(root, &d, &reg, errmsg), 0);
    assert_int_equal(count_entries(root), 0);
    assert_int_equal(listed(reg, NULL, NULL), 0);
    ud_registry_close(reg);
    ud_test_rmtree(root);
    free(root);
}

/*
 * A namespace that cannot be opened here (files left at its place, damaged) is a failure of this
 * node's storage: UD_EIO, never UD_ECORRUPT, UD_EEXIST or UD_EINVAL, which a writer of a cluster
 * records as the create's outcome (the name taken, or invalid) while the others create it.
 */
static void test_create_that_cannot_open_is_io(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("registry-create-io");
    struct ud_engine_options d = defaults();
    struct ud_registry *reg = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_registry_open(root, &d, &reg, errmsg), 0);
    /* Two segments of garbage: the older, sealed one does not verify. */
    char path[4096];
    snprintf(path, sizeof path, "%s/later/wal", root);
    assert_int_equal(ud_dir_create(path, errmsg), 0);
    for (int i = 1; i <= 2; i++) {
        snprintf(path, sizeof path, "%s/later/wal/%010d.seg", root, i);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        for (int k = 0; k < (64 << 10); k++)
            fputc(0x5a, f);
        fclose(f);
    }
    int rc = ud_registry_create(reg, "later", errmsg);
    print_message("# create over damaged files: %s: %s\n", ud_strerror(rc), errmsg);
    assert_int_equal(rc, UD_EIO);
    struct ud_ns *ns = NULL;
    assert_int_equal(ud_registry_acquire(reg, "later", &ns), UD_ENOTFOUND);
    ud_registry_close(reg);
    ud_test_rmtree(root);
    free(root);
}

/* Out of memory for the names, the list says so and calls fn for none, with the count; a count
 * alone cannot fail; flushing every namespace counts each as failed. */
static void test_list_out_of_memory(void **state)
{
    (void)state;
    char *root = ud_test_tmpdir("registry-list-nomem");
    struct ud_engine_options d = defaults();
    struct ud_registry *reg = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    assert_int_equal(ud_registry_open(root, &d, &reg, errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "a", errmsg), 0);
    assert_int_equal(ud_registry_create(reg, "b", errmsg), 0);
    struct names seen = {0};
    size_t n = 0;
    ud_registry_fail_lists(1);
    assert_int_equal(ud_registry_list(reg, collect, &seen, &n), UD_ENOMEM);
    assert_int_equal(n, 2);
    assert_int_equal(seen.n, 0);
    ud_registry_fail_lists(1);
    assert_int_equal(listed(reg, NULL, NULL), 2);
    ud_registry_fail_lists(0);
    size_t failed = 0;
    ud_registry_fail_lists(1);
    assert_int_equal(ud_registry_flush_all(reg, &failed), 2);
    assert_int_equal(failed, 2);
    assert_int_equal(ud_registry_flush_all(reg, &failed), 2);
    assert_int_equal(failed, 0);
    assert_int_equal(listed(reg, collect, &seen), 2);
    ud_registry_close(reg);
    ud_test_rmtree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_create_list_delete),
        cmocka_unit_test(test_list_out_of_memory),
        cmocka_unit_test(test_create_that_cannot_open_is_io),
        cmocka_unit_test(test_delete_does_not_wait_for_users),
        cmocka_unit_test(test_interrupted_delete_finished_at_open),
    };
    return cmocka_run_group_tests_name("registry", tests, NULL, NULL);
}
