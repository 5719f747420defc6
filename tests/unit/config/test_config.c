/* Writer configuration tests: the zero-config defaults, every section from a TOML file, flags, and
 * refusals that name file, line and key and leave the configuration unchanged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "tests/lib/testutil.h"
#include "writer/config.h"

struct fixture {
    char *dir;
    char path[1024];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->dir = ud_test_tmpdir("config");
    snprintf(f->path, sizeof f->path, "%s/w.toml", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ud_test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static int load(struct fixture *f, struct ud_writer_config *cfg, const char *text, char *errmsg)
{
    write_file(f->path, text);
    return ud_writer_config_load(cfg, f->path, errmsg);
}

/* Loads text over the defaults, expects UD_EINVAL with "w.toml:<line>: " + want, and checks that
 * the configuration did not change. */
static void load_bad(struct fixture *f, const char *text, int line, const char *want)
{
    struct ud_writer_config cfg, before;
    ud_writer_config_defaults(&cfg);
    before = cfg;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = load(f, &cfg, text, errmsg);
    if (rc != UD_EINVAL)
        fail_msg("expected UD_EINVAL, got %d (%s)\n--- input:\n%s", rc, errmsg, text);
    char prefix[1100];
    snprintf(prefix, sizeof prefix, "%s:%d: %s", f->path, line, want);
    if (strncmp(errmsg, prefix, strlen(prefix)) != 0)
        fail_msg("message \"%s\" does not start with \"%s\"\n--- input:\n%s", errmsg, prefix, text);
    assert_memory_equal(&cfg, &before, sizeof cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct ud_writer_config c;
    ud_writer_config_defaults(&c);
    assert_string_equal(c.data_dir, "./unison-data");
    assert_string_equal(c.ports_file, "");
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.default_namespace, "default");
    assert_int_equal(c.shutdown_timeout_ms, 30000);
    assert_string_equal(c.http_listen, "127.0.0.1:4000");
    assert_string_equal(c.tls_cert, "");
    assert_string_equal(c.tls_listen, "127.0.0.1:4443");
    assert_int_equal(c.max_body, 1048576);
    assert_string_equal(c.resp_listen, "127.0.0.1:6380");
    assert_int_equal(c.resp_max_clients, 1000);
    assert_int_equal(c.resp_idle_timeout_ms, 300000);
    assert_int_equal(c.resp_max_output, 1 << 20);
    assert_int_equal(c.resp_max_pending, 1024);
    assert_int_equal(c.node_id, 1);
    assert_string_equal(c.raft_listen, "127.0.0.1:4100");
    assert_string_equal(c.raft_advertise, "");
    assert_string_equal(c.cluster_id, "unison");
    assert_int_equal(c.npeers, 0);
    assert_int_equal(c.election_timeout_ms, 1000);
    assert_int_equal(c.heartbeat_timeout_ms, 100);
    assert_int_equal(c.snapshot_threshold, 8192);
    assert_int_equal(c.snapshot_trailing, 8192);
    assert_int_equal(c.snapshot_bytes, 64 << 20);
    assert_int_equal(c.snapshot_trailing_bytes, 64 << 20);
    assert_int_equal(c.commit_max_bytes, 1 << 20);
    assert_int_equal(c.commit_max_inflight, 4);
    assert_int_equal(c.admission_timeout_ms, 2000);
    assert_int_equal(c.txn_idle_timeout_ms, 60000);
    assert_int_equal(c.engine.sync_mode, UD_WAL_SYNC_NONE);
    assert_int_equal(c.engine.segment_size, 64 << 20);
    assert_int_equal(c.engine.memtable_bytes, 256 << 20);
    assert_int_equal(c.engine.max_sealed, 2);
    assert_int_equal(c.engine.idle_flush_ms, 10000);

    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_writer_config_finish(&c, errmsg), 0);
    assert_string_equal(c.backup_root, "./unison-data/backups");
    assert_int_equal(c.engine.txn_idle_timeout_ms, 60000);
}

static void test_every_section(void **state)
{
    struct fixture *f = *state;
    struct ud_writer_config c;
    ud_writer_config_defaults(&c);
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = load(f, &c,
                  "# node 2 of 3\n"
                  "[server]\n"
                  "data_dir = \"/var/lib/unison/n2\"\n"
                  "ports_file = \"/run/unison/n2.ports\"\n"
                  "log_level = \"debug\"\n"
                  "default_namespace = \"users\"\n"
                  "shutdown_timeout_ms = 5_000\n"
                  "[http]\n"
                  "listen = \"0.0.0.0:4002\"\n"
                  "tls_listen = \"[::]:4443\"\n"
                  "tls_cert = \"/etc/unison/cert.pem\"\n"
                  "tls_key = \"/etc/unison/key.pem\"\n"
                  "max_body = \"2MiB\"\n"
                  "backup_root = \"/backups\"\n"
                  "[resp]\n"
                  "listen = \"\"\n"
                  "max_clients = 20_000\n"
                  "idle_timeout_ms = 0\n"
                  "max_output = \"256KiB\"\n"
                  "max_pending = 64\n"
                  "[raft]\n"
                  "node_id = 2\n"
                  "listen = \"127.0.0.1:4102\"\n"
                  "cluster_id = \"prod-eu.1\"\n"
                  "peers = [\"1@127.0.0.1:4101\", \"2@127.0.0.1:4102\", \"3@127.0.0.1:4103\"]\n"
                  "election_timeout_ms = 2000\n"
                  "heartbeat_timeout_ms = 200\n"
                  "snapshot_threshold = 256\n"
                  "snapshot_trailing = 32\n"
                  "snapshot_bytes = \"16MiB\"\n"
                  "snapshot_trailing_bytes = \"8MiB\"\n"
                  "[write]\n"
                  "commit_max_bytes = \"512KiB\"\n"
                  "commit_max_inflight = 2\n"
                  "admission_timeout_ms = 0\n"
                  "txn_idle_timeout_ms = 10000\n"
                  "[storage]\n"
                  "sync_mode = \"interval\"\n"
                  "sync_interval_ms = 50\n"
                  "segment_size = \"16 MiB\"\n"
                  "memtable_bytes = 8388608\n"
                  "max_sealed = 3\n"
                  "idle_flush_ms = 2500\n"
                  "txn_max_bytes = \"1GiB\"\n"
                  "map_size = \"4GiB\"\n"
                  "retention_max_segments = 10\n"
                  "retention_max_age_ms = 86400000\n"
                  "[relayer]\n"
                  "upstreams = [\"http://127.0.0.1:4000\"]\n"
                  "anything = 1\n",
                  errmsg);
    if (rc != 0)
        fail_msg("%s", errmsg);
    assert_string_equal(c.data_dir, "/var/lib/unison/n2");
    assert_string_equal(c.ports_file, "/run/unison/n2.ports");
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.default_namespace, "users");
    assert_int_equal(c.shutdown_timeout_ms, 5000);
    assert_string_equal(c.http_listen, "0.0.0.0:4002");
    assert_string_equal(c.tls_listen, "[::]:4443");
    assert_string_equal(c.tls_cert, "/etc/unison/cert.pem");
    assert_string_equal(c.tls_key, "/etc/unison/key.pem");
    assert_int_equal(c.max_body, 2 << 20);
    assert_string_equal(c.backup_root, "/backups");
    assert_string_equal(c.resp_listen, "");
    assert_int_equal(c.resp_max_clients, 20000);
    assert_int_equal(c.resp_idle_timeout_ms, 0);
    assert_int_equal(c.resp_max_output, 256 << 10);
    assert_int_equal(c.resp_max_pending, 64);
    assert_int_equal(c.node_id, 2);
    assert_string_equal(c.raft_listen, "127.0.0.1:4102");
    assert_string_equal(c.cluster_id, "prod-eu.1");
    assert_int_equal(c.npeers, 3);
    assert_int_equal(c.peers[0].id, 1);
    assert_string_equal(c.peers[0].address, "127.0.0.1:4101");
    assert_int_equal(c.peers[2].id, 3);
    assert_string_equal(c.peers[2].address, "127.0.0.1:4103");
    assert_int_equal(c.election_timeout_ms, 2000);
    assert_int_equal(c.heartbeat_timeout_ms, 200);
    assert_int_equal(c.snapshot_threshold, 256);
    assert_int_equal(c.snapshot_trailing, 32);
    assert_int_equal(c.snapshot_bytes, 16 << 20);
    assert_int_equal(c.snapshot_trailing_bytes, 8 << 20);
    assert_int_equal(c.commit_max_bytes, 512 << 10);
    assert_int_equal(c.commit_max_inflight, 2);
    assert_int_equal(c.admission_timeout_ms, 0);
    assert_int_equal(c.txn_idle_timeout_ms, 10000);
    assert_int_equal(c.engine.sync_mode, UD_WAL_SYNC_INTERVAL);
    assert_int_equal(c.engine.sync_interval_ms, 50);
    assert_int_equal(c.engine.segment_size, 16 << 20);
    assert_int_equal(c.engine.memtable_bytes, 8 << 20);
    assert_int_equal(c.engine.max_sealed, 3);
    assert_int_equal(c.engine.idle_flush_ms, 2500);
    assert_true(c.engine.txn_max_bytes == UINT64_C(1) << 30);
    assert_true(c.engine.map_size == UINT64_C(4) << 30);
    assert_int_equal(c.engine.retention.max_segments, 10);
    assert_int_equal(c.engine.retention.max_age_ms, 86400000);

    assert_int_equal(ud_writer_config_finish(&c, errmsg), 0);
    assert_string_equal(c.backup_root, "/backups");          /* explicit: kept */
    assert_string_equal(c.raft_advertise, "127.0.0.1:4102"); /* our entry in peers */
    assert_int_equal(c.engine.txn_idle_timeout_ms, 10000);
}

static void test_file_errors(void **state)
{
    struct fixture *f = *state;
    struct ud_writer_config c;
    ud_writer_config_defaults(&c);
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_writer_config_load(&c, "/nonexistent/w.toml", errmsg), UD_ENOTFOUND);
    assert_non_null(strstr(errmsg, "/nonexistent/w.toml"));

    /* TOML syntax errors come through with their line. */
    load_bad(f, "[server]\ndata_dir = \"x\" junk\n", 2, "unexpected 'j' after value");
    load_bad(f, "[server]\nlog_level = \"a\"\nlog_level = \"b\"\n", 3, "duplicate key log_level");
}

static void test_unknown(void **state)
{
    struct fixture *f = *state;
    load_bad(f, "[server]\n\n[srever]\n", 3, "unknown section [srever]");
    load_bad(f, "[raft]\nnodeid = 2\n", 2, "[raft] unknown key nodeid (did you mean node_id?)");
    load_bad(f, "[raft]\nzzzzzzzz = 2\n", 2, "[raft] unknown key zzzzzzzz");
    load_bad(f, "[http]\nnode_id = 2\n", 2, "[http] unknown key node_id");
    load_bad(f, "data_dir = \"x\"\n", 1,
             "key data_dir is outside any section (it belongs in [server])");
    load_bad(f, "nothing = 1\n", 1, "key nothing is outside any section");
}

static void test_bad_values(void **state)
{
    struct fixture *f = *state;
    load_bad(f, "[server]\nlog_level = \"loud\"\n", 2,
             "[server] log_level: \"loud\": expected one of debug, info, warn, error");
    load_bad(f, "[server]\nlog_level = 3\n", 2,
             "[server] log_level: expected a string, found an integer");
    load_bad(f, "[raft]\nforward = \"false\"\n", 2,
             "[raft] forward: expected true or false (a boolean, not a string)");
    load_bad(f, "[storage]\nsegment_size = \"1__0MiB\"\n", 2,
             "[storage] segment_size: \"1__0MiB\": expected a size");
    load_bad(f, "[storage]\nsegment_size = \"64  MiB\"\n", 2,
             "[storage] segment_size: \"64  MiB\": expected a size");
    load_bad(f, "[server]\ndata_dir = \"\"\n", 2, "[server] data_dir: \"\": must not be empty");
    load_bad(f, "[server]\ndefault_namespace = \"a/b\"\n", 2,
             "[server] default_namespace: \"a/b\": a namespace name is");
    load_bad(f, "[http]\nlisten = \"localhost:4000\"\n", 2,
             "[http] listen: \"localhost:4000\": \"localhost\" is not an IP address");
    load_bad(f, "[http]\nlisten = \"127.0.0.1\"\n", 2, "[http] listen: \"127.0.0.1\": expected");
    load_bad(f, "[http]\nlisten = \"127.0.0.1:65536\"\n", 2, "[http] listen: \"127.0.0.1:65536\"");
    load_bad(f, "[http]\nlisten = \"127.0.0.1:http\"\n", 2, "[http] listen: \"127.0.0.1:http\"");
    load_bad(f, "[http]\nlisten = \"::1:4000\"\n", 2, "[http] listen: \"::1:4000\": IPv6");
    load_bad(f, "[http]\nmax_body = 5000000\n", 2,
             "[http] max_body: 5000000 is out of range 4096..4194304");
    load_bad(f, "[http]\nmax_body = \"1MB\"\n", 2, "[http] max_body: \"1MB\": expected a size");
    load_bad(f, "[http]\nmax_body = true\n", 2, "[http] max_body: expected a size");
    load_bad(f, "[resp]\nmax_clients = 0\n", 2, "[resp] max_clients: 0 is out of range 1..1000000");
    load_bad(f, "[resp]\nmax_clients = \"10\"\n", 2,
             "[resp] max_clients: expected an integer, found a string");
    load_bad(f, "[resp]\n\nidle_timeout_ms = -5\n", 3, "[resp] idle_timeout_ms: -5 is negative");
    load_bad(f, "[resp]\nidle_timeout_ms = 86400001\n", 2,
             "[resp] idle_timeout_ms: 86400001 is out of range 0..86400000");
    load_bad(f, "[resp]\nmax_output = \"1KiB\"\n", 2,
             "[resp] max_output: 1024 is out of range 4096..1073741824");
    load_bad(f, "[resp]\nmax_output = \"lots\"\n", 2,
             "[resp] max_output: \"lots\": expected a size");
    load_bad(f, "[resp]\nmax_pending = 0\n", 2, "[resp] max_pending: 0 is out of range");
    load_bad(f, "[resp]\nmaxclients = 5\n", 2,
             "[resp] unknown key maxclients (did you mean max_clients?)");
    load_bad(f, "[raft]\nnode_id = 0\n", 2, "[raft] node_id: 0 is out of range");
    load_bad(f, "[raft]\nnode_id = -1\n", 2, "[raft] node_id: -1 is negative");
    load_bad(f, "[raft]\nlisten = \"[::1]:4100\"\n", 2,
             "[raft] listen: \"[::1]:4100\": raft needs");
    load_bad(f, "[raft]\nadvertise = \"127.0.0.1:0\"\n", 2, "[raft] advertise: \"127.0.0.1:0\"");
    load_bad(f, "[raft]\ncluster_id = \"a b\"\n", 2, "[raft] cluster_id: \"a b\": expected");
    load_bad(f, "[raft]\nelection_timeout_ms = 50\n", 2, "[raft] election_timeout_ms: 50 is out");
    load_bad(f, "[write]\ncommit_max_inflight = 0\n", 2, "[write] commit_max_inflight: 0 is out");
    load_bad(f, "[write]\ncommit_max_bytes = \"7MiB\"\n", 2,
             "[write] commit_max_bytes: 7340032 is out of range 65536..6291456");
    load_bad(f, "[storage]\nsync_mode = \"sometimes\"\n", 2,
             "[storage] sync_mode: expected \"always\", \"interval\" or \"none\"");
    load_bad(f, "[storage]\nsegment_size = 1024\n", 2, "[storage] segment_size: 1024 is out");
    load_bad(f, "[storage]\nmemtable_bytes = \"99999999TiB\"\n", 2,
             "[storage] memtable_bytes: \"99999999TiB\": expected a size");
    /* A later bad key leaves the earlier good ones unapplied too (load_bad checks cfg). */
    load_bad(f, "[server]\nlog_level = \"debug\"\n[raft]\nnode_id = \"two\"\n", 4,
             "[raft] node_id: expected an integer, found a string");
}

static void test_peers(void **state)
{
    struct fixture *f = *state;
    load_bad(f, "[raft]\npeers = \"1@127.0.0.1:4101\"\n", 2,
             "[raft] peers: expected an array of \"id@host:port\"");
    load_bad(f, "[raft]\npeers = [1, 2]\n", 2, "[raft] peers: expected an array");
    /* An item's error names the item's own line. */
    load_bad(f, "[raft]\npeers = [\n  \"1@127.0.0.1:4101\",\n  \"x@127.0.0.1:4102\",\n]\n", 4,
             "[raft] peers: \"x@127.0.0.1:4102\": expected \"id@host:port\"");
    load_bad(f, "[raft]\npeers = [\"0@127.0.0.1:4101\"]\n", 2,
             "[raft] peers: \"0@127.0.0.1:4101\"");
    load_bad(f, "[raft]\npeers = [\"01@127.0.0.1:4101\"]\n", 2, "[raft] peers: \"01@");
    load_bad(f, "[raft]\npeers = [\"1@node1:4101\"]\n", 2,
             "[raft] peers: \"1@node1:4101\": \"node1\" is not an IP address");
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:0\"]\n", 2, "[raft] peers: \"1@127.0.0.1:0\"");
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:1\", \"1@127.0.0.1:2\"]\n", 2,
             "[raft] peers: peer id 1 appears twice");
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:1\", \"2@127.0.0.1:1\"]\n", 2,
             "[raft] peers: address 127.0.0.1:1 appears twice");
    load_bad(f,
             "[raft]\npeers = [\"1@127.0.0.1:1\", \"2@127.0.0.1:2\", \"3@127.0.0.1:3\", "
             "\"4@127.0.0.1:4\", \"5@127.0.0.1:5\", \"6@127.0.0.1:6\", \"7@127.0.0.1:7\", "
             "\"8@127.0.0.1:8\"]\n",
             2, "[raft] peers: at most 7 peers");

    /* A peer's HTTP and RESP addresses (forwarding, -MOVED). */
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:1,http=\"]\n", 2,
             "[raft] peers: \"1@127.0.0.1:1,http=\": peer options are");
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:1,web=127.0.0.1:80\"]\n", 2,
             "[raft] peers: \"1@127.0.0.1:1,web=127.0.0.1:80\": peer options are");
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:1,http=ftp://h:1\"]\n", 2,
             "[raft] peers: \"1@127.0.0.1:1,http=ftp://h:1\": expected a URL");
    load_bad(f, "[raft]\npeers = [\"1@127.0.0.1:1,http=127.0.0.1:0\"]\n", 2,
             "[raft] peers: \"1@127.0.0.1:1,http=127.0.0.1:0\": expected a URL");
    load_bad(f, "[raft]\njoin = 1\n", 2, "[raft] join: expected true or false");
    load_bad(f, "[http]\nadvertise = \"127.0.0.1:4000\"\n", 2,
             "[http] advertise: \"127.0.0.1:4000\": expected a URL");

    struct ud_writer_config c;
    ud_writer_config_defaults(&c);
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(c.forward, 1);
    assert_int_equal(c.join, 0);
    assert_int_equal(c.leader_wait_ms, 5000);
    assert_int_equal(load(f, &c, "[raft]\npeers = []\n", errmsg), 0);
    assert_int_equal(c.npeers, 0);
    assert_int_equal(load(f, &c,
                          "[http]\nadvertise = \"https://10.0.0.1:4443\"\n[raft]\njoin = true\n"
                          "forward = false\nleader_wait_ms = 750\npeers = [\n"
                          "  \"1@127.0.0.1:4101,http=127.0.0.1:4001,resp=127.0.0.1:6381\",\n"
                          "  \"2@127.0.0.1:4102,http=https://10.0.0.2:4443\",\n"
                          "  \"3@127.0.0.1:4103\"]\n",
                          errmsg),
                     0);
    assert_int_equal(c.npeers, 3);
    assert_string_equal(c.peers[0].address, "127.0.0.1:4101");
    assert_string_equal(c.peers[0].http, "http://127.0.0.1:4001");
    assert_string_equal(c.peers[0].resp, "127.0.0.1:6381");
    assert_string_equal(c.peers[1].http, "https://10.0.0.2:4443");
    assert_string_equal(c.peers[1].resp, "");
    assert_string_equal(c.peers[2].http, "");
    assert_string_equal(c.http_advertise, "https://10.0.0.1:4443");
    assert_int_equal(c.join, 1);
    assert_int_equal(c.forward, 0);
    assert_int_equal(c.leader_wait_ms, 750);
    assert_int_equal(ud_writer_config_set(&c, "raft.forward", "true", errmsg), 0);
    assert_int_equal(c.forward, 1);
}

static void test_set(void **state)
{
    (void)state;
    struct ud_writer_config c;
    ud_writer_config_defaults(&c);
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_writer_config_set(&c, "http.listen", "127.0.0.1:0", errmsg), 0);
    assert_string_equal(c.http_listen, "127.0.0.1:0");
    assert_int_equal(ud_writer_config_set(&c, "resp.listen", "", errmsg), 0);
    assert_string_equal(c.resp_listen, "");
    assert_int_equal(ud_writer_config_set(&c, "storage.memtable_bytes", "32MiB", errmsg), 0);
    assert_int_equal(c.engine.memtable_bytes, 32 << 20);
    assert_int_equal(ud_writer_config_set(&c, "raft.node_id", "7", errmsg), 0);
    assert_int_equal(c.node_id, 7);
    assert_int_equal(ud_writer_config_set(&c, "server.data_dir", "/tmp/x", errmsg), 0);
    assert_int_equal(ud_writer_config_set(&c, "storage.sync_mode", "always", errmsg), 0);
    assert_int_equal(c.engine.sync_mode, UD_WAL_SYNC_ALWAYS);

    assert_int_equal(ud_writer_config_set(&c, "http.listen", "nowhere", errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "http.listen: \"nowhere\": expected host:port, found \"nowhere\"");
    assert_string_equal(c.http_listen, "127.0.0.1:0"); /* unchanged */
    assert_int_equal(ud_writer_config_set(&c, "raft.node_id", "two", errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "raft.node_id: expected an integer, found a string");
    assert_int_equal(ud_writer_config_set(&c, "raft.node_id", "99999999999999999999", errmsg),
                     UD_EINVAL);
    assert_int_equal(ud_writer_config_set(&c, "raft.peers", "1@127.0.0.1:1", errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "configuration file"));
    assert_int_equal(ud_writer_config_set(&c, "nodot", "1", errmsg), UD_EINVAL);
    assert_int_equal(ud_writer_config_set(&c, "bogus.key", "1", errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "bogus.key: unknown section [bogus]");
    assert_int_equal(ud_writer_config_set(&c, "relayer.upstream", "1", errmsg), UD_EINVAL);
    assert_int_equal(ud_writer_config_set(&c, "http.lisen", "x", errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "http.lisen: [http] unknown key lisen (did you mean listen?)");
    /* A flag's value written as an integer meets the checks a file's integer meets. */
    assert_int_equal(ud_writer_config_set(&c, "storage.max_sealed", "-1", errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "storage.max_sealed: -1 is negative");
    assert_int_equal(ud_writer_config_set(&c, "storage.max_sealed", "2_", errmsg), UD_EINVAL);
    assert_string_equal(errmsg,
                        "storage.max_sealed: 2_: '_' in an integer must be between two digits");
    assert_int_equal(ud_writer_config_set(&c, "storage.max_sealed", "99999999999999999999", errmsg),
                     UD_EINVAL);
    assert_string_equal(
        errmsg, "storage.max_sealed: 99999999999999999999 does not fit in a 64-bit integer");
    assert_int_equal(ud_writer_config_set(&c, "storage.segment_size", "1__0_MiB", errmsg),
                     UD_EINVAL);
    assert_int_equal(ud_writer_config_set(&c, "storage.segment_size", "1_0 MiB", errmsg), 0);
    assert_int_equal(c.engine.segment_size, 10 << 20);
    assert_int_equal(ud_writer_config_set(&c, "raft.forward", "false", errmsg), 0);
    /* Digits are text for a string key. */
    assert_int_equal(ud_writer_config_set(&c, "raft.cluster_id", "2024", errmsg), 0);
    assert_string_equal(c.cluster_id, "2024");
    assert_int_equal(ud_writer_config_set(&c, "server.default_namespace", "1", errmsg), 0);
}

static void test_finish(void **state)
{
    struct fixture *f = *state;
    struct ud_writer_config c;
    char errmsg[UD_ERRMSG_SIZE];

    /* backup_root follows data_dir unless given. */
    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_set(&c, "server.data_dir", "/srv/u", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), 0);
    assert_string_equal(c.backup_root, "/srv/u/backups");

    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_set(&c, "raft.heartbeat_timeout_ms", "1000", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "[raft] heartbeat_timeout_ms (set by a flag) (1000) must be below "
                                "[raft] election_timeout_ms (1000)");

    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_set(&c, "raft.snapshot_threshold", "100", errmsg), 0);
    assert_int_equal(ud_writer_config_set(&c, "raft.snapshot_trailing", "200", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "snapshot_trailing"));

    ud_writer_config_defaults(&c);
    assert_int_equal(load(f, &c, "[raft]\nnode_id = 4\npeers = [\"1@127.0.0.1:1\"]\n", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    char want[1200];
    snprintf(want, sizeof want, "%s:3: [raft] peers: node_id 4 is not among them", f->path);
    assert_string_equal(errmsg, want);

    ud_writer_config_defaults(&c);
    assert_int_equal(load(f, &c,
                          "[raft]\nadvertise = \"10.0.0.1:4100\"\n"
                          "peers = [\"1@127.0.0.1:1\"]\n",
                          errmsg),
                     0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "differs from this node's entry"));

    /* A single writer without peers keeps advertise empty: raft uses the bound address. */
    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), 0);
    assert_string_equal(c.raft_advertise, "");

    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_set(&c, "http.tls_cert", "/c.pem", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "[http] tls_cert (set by a flag) is set without tls_key: set both");

    /* Errors found after loading name the file and line of the key they are about. */
    ud_writer_config_defaults(&c);
    assert_int_equal(load(f, &c, "[server]\n\n[http]\ntls_key = \"/k.pem\"\n", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    snprintf(want, sizeof want, "%s:4: [http] tls_key is set without tls_cert: set both", f->path);
    assert_string_equal(errmsg, want);
    char where[1200];
    assert_string_equal(ud_writer_config_where(&c, "http", "listen", where, sizeof where),
                        "[http] listen");
    assert_int_equal(ud_writer_config_set(&c, "http.tls_key", "/other.pem", errmsg), 0);
    assert_string_equal(ud_writer_config_where(&c, "http", "tls_key", where, sizeof where),
                        "[http] tls_key (set by a flag)");
    /* A second file replaces the first's lines. */
    assert_int_equal(load(f, &c, "[resp]\nlisten = \"\"\n", errmsg), 0);
    snprintf(want, sizeof want, "%s:2: [resp] listen", f->path);
    assert_string_equal(ud_writer_config_where(&c, "resp", "listen", where, sizeof where), want);
    assert_string_equal(ud_writer_config_where(&c, "http", "tls_key", where, sizeof where),
                        "[http] tls_key (set by a flag)");

    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_set(&c, "resp.listen", "127.0.0.1:4000", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), UD_EINVAL);
    assert_string_equal(errmsg, "[http] listen and [resp] listen (set by a flag) are both "
                                "127.0.0.1:4000");

    /* Port 0 everywhere (what tests use) is not a clash. */
    ud_writer_config_defaults(&c);
    assert_int_equal(ud_writer_config_set(&c, "http.listen", "127.0.0.1:0", errmsg), 0);
    assert_int_equal(ud_writer_config_set(&c, "resp.listen", "127.0.0.1:0", errmsg), 0);
    assert_int_equal(ud_writer_config_set(&c, "raft.listen", "127.0.0.1:0", errmsg), 0);
    assert_int_equal(ud_writer_config_finish(&c, errmsg), 0);
}

static void test_split_address(void **state)
{
    (void)state;
    char host[64];
    int port = -1;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(
        ud_writer_config_split_address("127.0.0.1:4000", host, sizeof host, &port, errmsg), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 4000);
    assert_int_equal(ud_writer_config_split_address("[::1]:0", host, sizeof host, &port, errmsg),
                     0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(
        ud_writer_config_split_address("0.0.0.0:65535", host, sizeof host, &port, errmsg), 0);
    assert_int_equal(port, 65535);

    const char *bad[] = {"",         ":80",        "1.2.3.4:",      "1.2.3.4:-1",    "1.2.3.4:+1",
                         "1.2.3:80", "[::1:80",    "[]:80",         "1.2.3.4:99999", "[1.2.3.4]:1",
                         "host:80",  "1.2.3.4:1a", "1.2.3.4:000001"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errmsg[0] = '\0';
        if (ud_writer_config_split_address(bad[i], host, sizeof host, &port, errmsg) != UD_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(errmsg[0] != '\0');
    }
    /* The host buffer bound is honoured. */
    char small[4];
    assert_int_equal(
        ud_writer_config_split_address("127.0.0.1:1", small, sizeof small, &port, errmsg),
        UD_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_every_section, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peers, setup, teardown),
        cmocka_unit_test(test_set),
        cmocka_unit_test_setup_teardown(test_finish, setup, teardown),
        cmocka_unit_test(test_split_address),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
