/* unison-relayer configuration: upstream lists from flags and files, per-namespace upstreams,
 * the sections shared with the writer, and errors that name file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "relayer/config.h"
#include "tests/lib/testutil.h"

static char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_flags(void **state)
{
    (void)state;
    struct ud_relayer_config c;
    char errmsg[UD_ERRMSG_SIZE] = "";
    ud_relayer_config_defaults(&c);
    assert_int_equal(ud_relayer_config_finish(&c, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "--upstream"));

    assert_int_equal(ud_relayer_config_set(&c, "relayer.upstreams",
                                           "http://127.0.0.1:4000/,http://10.0.0.2:4000", errmsg),
                     0);
    assert_int_equal(c.nupstreams, 2);
    assert_string_equal(c.upstreams[0], "http://127.0.0.1:4000"); /* trailing slash dropped */
    assert_string_equal(c.upstreams[1], "http://10.0.0.2:4000");
    struct ud_relayer_config d = c;
    assert_int_equal(
        ud_relayer_config_set(&d, "relayer.upstreams", "http://10.0.0.3:4000/v1", errmsg),
        UD_EINVAL);
    assert_non_null(strstr(errmsg, "has a path: give scheme, host and port only"));

    assert_int_equal(ud_relayer_config_set(&c, "relayer.namespaces",
                                           "orders,catalog=http://hub-b:4000|https://hub-c:4443",
                                           errmsg),
                     0);
    assert_int_equal(c.nnamespaces, 2);
    assert_string_equal(c.namespaces[0].name, "orders");
    assert_int_equal(c.namespaces[0].nupstreams, 0);
    assert_int_equal(c.namespaces[1].nupstreams, 2);
    assert_string_equal(c.namespaces[1].upstreams[1], "https://hub-c:4443");
    assert_int_equal(ud_relayer_config_finish(&c, errmsg), 0);

    /* Errors name what is wrong. */
    assert_int_equal(ud_relayer_config_set(&c, "relayer.upstreams", "ftp://x", errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "relayer.upstreams"));
    assert_non_null(strstr(errmsg, "ftp://x"));
    assert_int_equal(c.nupstreams, 2); /* unchanged */
    assert_int_equal(ud_relayer_config_set(&c, "relayer.namespaces", "a,a", errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "twice"));
    assert_int_equal(ud_relayer_config_set(&c, "relayer.namespaces", "bad/name", errmsg),
                     UD_EINVAL);
    assert_int_equal(ud_relayer_config_set(&c, "http.listen", "localhost:80", errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "not an IP address"));
    assert_int_equal(ud_relayer_config_set(&c, "storage.sync_mode", "always", errmsg), 0);
    assert_int_equal(c.engine.sync_mode, UD_WAL_SYNC_ALWAYS);
    assert_int_equal(ud_relayer_config_set(&c, "raft.node_id", "1", errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "unknown section [raft]"));
    assert_int_equal(ud_relayer_config_set(&c, "relayer.hearbeat_timeout_ms", "3000", errmsg),
                     UD_EINVAL);
    assert_non_null(strstr(errmsg, "did you mean heartbeat_timeout_ms"));
}

static void test_file(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("relayer-config");
    char errmsg[UD_ERRMSG_SIZE] = "";
    struct ud_relayer_config c;
    ud_relayer_config_defaults(&c);
    char *good = write_file(dir, "good.toml",
                            "[server]\ndata_dir = \"/var/lib/edge\"\n"
                            "[http]\nlisten = \"0.0.0.0:0\"\n"
                            "[storage]\nmemtable_bytes = \"16MiB\"\n"
                            "[relayer]\nid = \"edge-1\"\n"
                            "upstreams = [\"http://10.0.0.1:4000\", \"http://10.0.0.2:4000\"]\n"
                            "namespaces = [\"orders\", \"catalog=http://hub-b:4000\"]\n"
                            "heartbeat_timeout_ms = 5000\n");
    assert_int_equal(ud_relayer_config_load(&c, good, errmsg), 0);
    assert_string_equal(c.data_dir, "/var/lib/edge");
    assert_string_equal(c.id, "edge-1");
    assert_int_equal(c.nupstreams, 2);
    assert_int_equal(c.nnamespaces, 2);
    assert_int_equal(c.engine.memtable_bytes, 16u << 20);
    assert_int_equal(c.heartbeat_timeout_ms, 5000);
    assert_int_equal(ud_relayer_config_finish(&c, errmsg), 0);

    /* The writer's sections are not the relayer's. */
    char *raft = write_file(dir, "raft.toml", "[raft]\nnode_id = 2\n");
    assert_int_equal(ud_relayer_config_load(&c, raft, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "raft.toml:1: unknown section [raft]"));
    char *bad = write_file(dir, "bad.toml",
                           "[relayer]\nupstreams = [\n  \"http://a:1\",\n"
                           "  \"tcp://b:2\"]\n");
    assert_int_equal(ud_relayer_config_load(&c, bad, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "bad.toml:4: [relayer] upstreams"));
    assert_int_equal(c.nupstreams, 2); /* a file with an error changes nothing */

    /* Checks across keys name each key's file and line, or the flag that set it. */
    char *clash = write_file(dir, "clash.toml",
                             "[http]\nlisten = \"127.0.0.1:5000\"\n"
                             "tls_listen = \"127.0.0.1:5000\"\ntls_cert = \"/c.pem\"\n");
    ud_relayer_config_defaults(&c);
    assert_int_equal(ud_relayer_config_set(&c, "relayer.upstreams", "http://a:1", errmsg), 0);
    assert_int_equal(ud_relayer_config_load(&c, clash, errmsg), 0);
    assert_int_equal(ud_relayer_config_finish(&c, errmsg), UD_EINVAL);
    char want[1200];
    snprintf(want, sizeof want, "%s:4: [http] tls_cert is set without tls_key: set both", clash);
    assert_string_equal(errmsg, want);
    assert_int_equal(ud_relayer_config_set(&c, "http.tls_key", "/k.pem", errmsg), 0);
    assert_int_equal(ud_relayer_config_finish(&c, errmsg), UD_EINVAL);
    snprintf(want, sizeof want,
             "%s:2: [http] listen and %s:3: [http] tls_listen are both 127.0.0.1:5000", clash,
             clash);
    assert_string_equal(errmsg, want);
    free(clash);
    free(good);
    free(raft);
    free(bad);
    ud_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests_name("relayer_config", tests, NULL, NULL);
}
