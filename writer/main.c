/* unison-writer: flags, configuration, the parts started in order, a graceful stop on a signal. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "core/cli.h"
#include "core/dir.h"
#include "core/err.h"
#include "core/http/http.h"
#include "core/log.h"
#include "core/registry.h"
#include "raft/node.h"
#include "writer/config.h"
#include "writer/submit.h"
#include "writer/cluster.h"
#include "writer/writer.h"

#ifndef UD_VERSION
#define UD_VERSION "unknown"
#endif

#define LOG "writer"

/* Exit statuses: documented in --help and docs/configuration.md. */
#define EXIT_OK     0
#define EXIT_FAILED 1 /* startup failed, a part failed, or the stop did not finish */
#define EXIT_USAGE  2 /* bad flags or configuration */
/* 3 is UD_EXIT_RAFT_LOG_WRITE (raft/node.h): the leader's log write could not start */
_Static_assert(UD_EXIT_RAFT_LOG_WRITE == 3, "the exit status the usage text and docs give");

/* How often the default namespace step looks at raft's state before this node leads. */
#define DEFAULT_NS_POLL_MS 100

/* After the flush, how long handles that other parts leave open (a client connection still open
 * past the HTTP server's own grace period, say) may keep the loop running before we exit anyway. */
#define EXIT_LINGER_MS 2000

/*
 * The process. Stopping is a chain of asynchronous steps, each started by the previous one's
 * callback:
 *
 *   RUNNING --signal--> FRONTENDS (HTTP, RESP stop; in-flight requests finish)
 *           --both done--> RAFT (raft closes; pending proposals answered)
 *           --raft closed--> CLOSING (write path closed, namespaces flushed, own handles closed)
 *           --loop empty, or EXIT_LINGER_MS--> main() closes the registry and exits
 *
 * A failed start enters the same chain with only the parts that started.
 */
enum stage { STAGE_RUNNING, STAGE_FRONTENDS, STAGE_RAFT, STAGE_CLOSING };

struct app {
    struct ud_writer w; /* first: callbacks get &w and cast back */
    struct ud_writer_config cfg;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t ns_timer;   /* default namespace creation */
    uv_timer_t stop_timer; /* shutdown_timeout_ms, then the exit linger */
    enum stage stage;
    int exit_code;
    int submit_started, raft_started, http_started, resp_started;
    int frontends_pending;
    int ns_inflight;
    int ns_done;
    int lock_fd;
    char ports_written[1024]; /* path of the ports file we wrote, removed at exit */
};

static struct app *app_of(struct ud_writer *w)
{
    return (struct app *)((char *)w - offsetof(struct app, w));
}

/* --- flags ----------------------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: unison-writer [options]\n"
        "\n"
        "Runs one UnisonDB writer: HTTP API, Redis-protocol front end and raft, with every\n"
        "write committed through raft. With no options it serves a single writer with data in\n"
        "./unison-data, HTTP on 127.0.0.1:4000, RESP on 127.0.0.1:6380, raft on 127.0.0.1:4100\n"
        "and a namespace named \"default\".\n"
        "\n"
        "Options (flags override the configuration file):\n"
        "  -c, --config FILE         TOML configuration (docs/configuration.md)\n"
        "  -d, --data-dir DIR        data directory            [server] data_dir\n"
        "      --http HOST:PORT      HTTP listener, port 0 = any [http] listen\n"
        "      --resp HOST:PORT      RESP listener, \"off\" = none [resp] listen\n"
        "      --raft HOST:PORT      raft listener (IPv4)      [raft] listen\n"
        "      --ports-file FILE     write the bound ports as JSON once listening\n"
        "      --log-level LEVEL     debug, info, warn or error\n"
        "      --set SECTION.KEY=VALUE\n"
        "                            any other key, e.g. --set storage.sync_mode=interval\n"
        "      --check-config        check the configuration and flags, then exit\n"
        "  -V, --version             print the version and exit\n"
        "  -h, --help                print this help and exit\n"
        "\n"
        "SIGTERM or SIGINT stops gracefully (listeners close, in-flight requests finish, raft\n"
        "closes, namespaces are flushed); a second signal exits at once.\n"
        "Exit status: 0 after a graceful stop, 1 on a failure, 2 on bad options or "
        "configuration,\n"
        "3 when this node led raft and could not start its own raft log write (restart it).\n");
}

/* Flags that set configuration keys (core/cli.h adds -c, --set, --check-config, -V, -h). */
static const struct ud_cli_flag writer_flags[] = {
    {"data-dir", 'd', "server.data_dir", 0},
    {"http", 0, "http.listen", 0},
    {"resp", 0, "resp.listen", 1},
    {"raft", 0, "raft.listen", 0},
    {"ports-file", 0, "server.ports_file", 0},
    {"log-level", 0, "server.log_level", 0},
};

/* --- files ----------------------------------------------------------------------------------- */

static int write_ports_file(struct app *a, char *errmsg)
{
    const struct ud_writer *w = &a->w;
    char resp[16] = "null", https[16] = "null", json[160];
    if (a->resp_started)
        snprintf(resp, sizeof resp, "%d", w->resp_port);
    if (w->https_port > 0)
        snprintf(https, sizeof https, "%d", w->https_port);
    /* Raft waits for an out-of-band catch-up to finish before it binds: the configured port
     * then (a cluster's writers have fixed raft ports). */
    int raft_port = w->raft_port;
    const char *colon = strrchr(a->cfg.raft_listen, ':');
    if (raft_port == 0 && colon != NULL)
        raft_port = atoi(colon + 1);
    snprintf(json, sizeof json, "{\"http\":%d,\"resp\":%s,\"raft\":%d,\"https\":%s}\n",
             w->http_port, resp, raft_port, https);
    int rc = ud_dir_write_file(a->cfg.ports_file, json, strlen(json), 0, errmsg);
    if (rc == 0)
        snprintf(a->ports_written, sizeof a->ports_written, "%s", a->cfg.ports_file);
    return rc;
}

/* "127.0.0.1:0" with port 34567 -> "127.0.0.1:34567" (brackets kept for IPv6). */
static void bound_address(const char *listen, int port, char *out, size_t outsz)
{
    const char *colon = strrchr(listen, ':');
    int hostlen = colon != NULL ? (int)(colon - listen) : (int)strlen(listen);
    snprintf(out, outsz, "%.*s:%d", hostlen, listen, port);
}

static void log_listeners(struct app *a)
{
    char addr[160];
    bound_address(a->cfg.http_listen, a->w.http_port, addr, sizeof addr);
    ud_info(LOG, "listening: http on %s", addr);
    if (a->w.https_port > 0) {
        bound_address(a->cfg.tls_listen, a->w.https_port, addr, sizeof addr);
        ud_info(LOG, "listening: https on %s", addr);
    }
    if (a->resp_started) {
        bound_address(a->cfg.resp_listen, a->w.resp_port, addr, sizeof addr);
        ud_info(LOG, "listening: resp on %s", addr);
    }
    if (a->w.raft_port > 0) {
        bound_address(a->cfg.raft_listen, a->w.raft_port, addr, sizeof addr);
        ud_info(LOG, "listening: raft on %s", addr);
    } else {
        ud_info(LOG, "raft: not started until the out-of-band catch-up is done");
    }
}

/* --- the default namespace ------------------------------------------------------------------- */

static void default_ns_marker(struct app *a, char *path, size_t size)
{
    snprintf(path, size, "%s/default-namespace", a->cfg.data_dir);
}

static void default_ns_ready(struct app *a, const char *how)
{
    char path[1100], errmsg[UD_ERRMSG_SIZE];
    a->ns_done = 1;
    uv_timer_stop(&a->ns_timer);
    default_ns_marker(a, path, sizeof path);
    char text[UD_NS_NAME_MAX + 2];
    snprintf(text, sizeof text, "%s\n", a->cfg.default_namespace);
    if (ud_dir_write_file(path, text, strlen(text), 0, errmsg) != 0)
        ud_warn(LOG, "default namespace: %s (it may be created again at the next start)", errmsg);
    ud_info(LOG, "default namespace \"%s\" %s", a->cfg.default_namespace, how);
}

static void default_ns_timer_cb(uv_timer_t *t);

static void default_ns_created_cb(void *arg, int status, const char *errmsg, const uint64_t *lsns,
                                  size_t n)
{
    (void)lsns;
    (void)n;
    struct app *a = arg;
    a->ns_inflight = 0;
    if (a->stage != STAGE_RUNNING || a->ns_done)
        return;
    if (status == 0)
        default_ns_ready(a, "created");
    else if (status == UD_EEXIST)
        default_ns_ready(a, "exists");
    else {
        ud_warn(LOG, "default namespace \"%s\": %s: %s (retrying in 1 s)", a->cfg.default_namespace,
                ud_strerror(status), errmsg != NULL ? errmsg : "");
        uv_timer_start(&a->ns_timer, default_ns_timer_cb, 1000, DEFAULT_NS_POLL_MS);
    }
}

/*
 * The default namespace is created through raft like any other (so every writer of a cluster
 * has it), which only the leader can do: until this node leads or sees the namespace applied by
 * another leader, look again every DEFAULT_NS_POLL_MS.
 */
static void default_ns_timer_cb(uv_timer_t *t)
{
    struct app *a = t->data;
    if (a->stage != STAGE_RUNNING || a->ns_done || a->ns_inflight)
        return;
    struct ud_ns *ns;
    if (ud_registry_acquire(a->w.registry, a->cfg.default_namespace, &ns) == 0) {
        ud_registry_release(a->w.registry, ns);
        default_ns_ready(a, "exists");
        return;
    }
    if (!ud_writer_is_leader(&a->w))
        return;
    a->ns_inflight = 1;
    ud_submit_ns_create(&a->w, a->cfg.default_namespace, default_ns_created_cb, a);
}

static void start_default_ns(struct app *a)
{
    char path[1100];
    default_ns_marker(a, path, sizeof path);
    if (a->cfg.default_namespace[0] == '\0' || access(path, F_OK) == 0) {
        a->ns_done = 1;
        return;
    }
    uv_timer_start(&a->ns_timer, default_ns_timer_cb, 0, DEFAULT_NS_POLL_MS);
}

/* --- stopping -------------------------------------------------------------------------------- */

static void enter_raft_stage(struct app *a);
static void enter_closing_stage(struct app *a);

static void handle_closed_cb(uv_handle_t *h)
{
    (void)h;
}

static const char *stage_name(enum stage s)
{
    switch (s) {
    case STAGE_RUNNING:
        return "running";
    case STAGE_FRONTENDS:
        return "waiting for in-flight requests";
    case STAGE_RAFT:
        return "waiting for raft to close";
    case STAGE_CLOSING:
        return "flushing namespaces";
    }
    return "?";
}

/* Moves to the next stage; the chain only goes forward (see the diagram at struct app). */
static void set_stage(struct app *a, enum stage next)
{
    UD_ASSERT(next == a->stage + 1);
    ud_debug(LOG, "stop: %s -> %s", stage_name(a->stage), stage_name(next));
    a->stage = next;
}

static void stop_timer_cb(uv_timer_t *t)
{
    struct app *a = t->data;
    ud_error(LOG, "stop did not finish within %u ms (%s); exiting now", a->cfg.shutdown_timeout_ms,
             stage_name(a->stage));
    _exit(EXIT_FAILED);
}

/* Counts the handles still holding the loop, by type, for the linger warning. */
static void count_handle_cb(uv_handle_t *h, void *arg)
{
    size_t *by_type = arg;
    if (!uv_is_closing(h) && uv_has_ref(h) && h->type > 0 && h->type < UV_HANDLE_TYPE_MAX)
        by_type[h->type]++;
}

static void linger_timer_cb(uv_timer_t *t)
{
    struct app *a = t->data;
    size_t by_type[UV_HANDLE_TYPE_MAX] = {0};
    uv_walk(&a->loop, count_handle_cb, by_type);
    char list[256] = "";
    size_t len = 0;
    for (int i = 1; i < UV_HANDLE_TYPE_MAX && len < sizeof list; i++) {
        if (by_type[i] > 0)
            len += (size_t)snprintf(list + len, sizeof list - len, "%s%s x%zu", len ? ", " : "",
                                    uv_handle_type_name((uv_handle_type)i), by_type[i]);
    }
    ud_warn(LOG, "stop: handles of other parts still open %d ms after the flush (%s); exiting",
            EXIT_LINGER_MS, list[0] ? list : "none referenced");
    uv_stop(&a->loop);
}

static void frontend_stopped_cb(struct ud_writer *w)
{
    struct app *a = app_of(w);
    UD_ASSERT(a->frontends_pending > 0);
    if (--a->frontends_pending == 0)
        enter_raft_stage(a);
}

static void begin_stop(struct app *a, int exit_code)
{
    if (a->stage != STAGE_RUNNING)
        return;
    set_stage(a, STAGE_FRONTENDS);
    a->exit_code = exit_code;
    a->w.stopping = 1;
    uv_timer_stop(&a->ns_timer);
    if (a->cfg.shutdown_timeout_ms > 0) {
        uv_timer_start(&a->stop_timer, stop_timer_cb, a->cfg.shutdown_timeout_ms, 0);
        uv_unref((uv_handle_t *)&a->stop_timer); /* never the reason the loop keeps running */
    }
    /* Counted from 1 so that a stop that completes synchronously cannot finish the stage early. */
    a->frontends_pending = 1;
    if (a->http_started) {
        a->http_started = 0;
        a->frontends_pending++;
        ud_writer_http_stop(&a->w, frontend_stopped_cb);
    }
    if (a->resp_started) {
        a->resp_started = 0;
        a->frontends_pending++;
        ud_writer_resp_stop(&a->w, frontend_stopped_cb);
    }
    frontend_stopped_cb(&a->w);
}

static void raft_stopped_cb(struct ud_writer *w)
{
    enter_closing_stage(app_of(w));
}

static void enter_raft_stage(struct app *a)
{
    set_stage(a, STAGE_RAFT);
    ud_info(LOG, "stop: front ends closed; closing raft");
    if (a->raft_started) {
        a->raft_started = 0;
        /* Also ends an out-of-band catch-up in progress (raft may be closed for it). */
        ud_writer_raft_end(&a->w, raft_stopped_cb);
    } else {
        enter_closing_stage(a);
    }
}

static void enter_closing_stage(struct app *a)
{
    set_stage(a, STAGE_CLOSING);
    if (a->submit_started) {
        a->submit_started = 0;
        ud_writer_submit_close(&a->w);
    }
    /* After raft: raft's callbacks of cluster operations have all run by now. */
    ud_writer_cluster_close(&a->w);
    if (a->w.registry != NULL) {
        /* A failed flush loses nothing (raft's log and the WAL hold every record), but the exit
         * status says so. */
        size_t failed = 0;
        size_t n = ud_registry_flush_all(a->w.registry, &failed);
        ud_info(LOG, "stop: raft closed; %zu namespace(s) flushed", n - failed);
        if (failed > 0)
            a->exit_code = EXIT_FAILED;
    }
    /*
     * Nothing of ours keeps the loop running any more: uv_run returns in main() as soon as the
     * other parts' handles are closed. The signal handlers stay (a second signal still exits at
     * once) but unreferenced, and the stop timer becomes the linger bound.
     */
    uv_close((uv_handle_t *)&a->ns_timer, handle_closed_cb);
    uv_unref((uv_handle_t *)&a->sigterm);
    uv_unref((uv_handle_t *)&a->sigint);
    uv_timer_stop(&a->stop_timer);
    uv_timer_start(&a->stop_timer, linger_timer_cb, EXIT_LINGER_MS, 0);
    uv_unref((uv_handle_t *)&a->stop_timer);
}

static const char *signal_name(int signum)
{
    return signum == SIGTERM ? "SIGTERM" : signum == SIGINT ? "SIGINT" : "signal";
}

static void signal_cb(uv_signal_t *s, int signum)
{
    struct app *a = s->data;
    if (a->stage != STAGE_RUNNING) {
        ud_warn(LOG, "second signal (%s) while %s: exiting now", signal_name(signum),
                stage_name(a->stage));
        _exit(EXIT_FAILED);
    }
    ud_info(LOG, "%s: stopping (listeners close, in-flight requests finish)", signal_name(signum));
    begin_stop(a, EXIT_OK);
}

/* --- starting -------------------------------------------------------------------------------- */

static int configure(struct app *a, int argc, char **argv)
{
    struct ud_cli cli;
    int rc = ud_cli_parse(argc, argv, "unison-writer", UD_VERSION, writer_flags,
                          sizeof writer_flags / sizeof writer_flags[0], usage, &cli);
    if (rc >= 0)
        return rc;
    const char *config_path = cli.config_path;

    char errmsg[UD_ERRMSG_SIZE];
    ud_writer_config_defaults(&a->cfg);
    if (config_path != NULL && (rc = ud_writer_config_load(&a->cfg, config_path, errmsg)) != 0) {
        fprintf(stderr, "unison-writer: %s\n", errmsg);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < cli.nsets; i++) {
        if (ud_writer_config_set(&a->cfg, cli.sets[i].key, cli.sets[i].value, errmsg) != 0) {
            fprintf(stderr, "unison-writer: %s\n", errmsg);
            return EXIT_USAGE;
        }
    }
    if (ud_writer_config_finish(&a->cfg, errmsg) != 0) {
        fprintf(stderr, "unison-writer: %s\n", errmsg);
        return EXIT_USAGE;
    }
    /* An unreadable certificate is a configuration error: found before the data directory is
     * touched, and by --check-config. */
    if (a->cfg.tls_cert[0] != '\0') {
        int bad_part;
        if (ud_http_tls_check(a->cfg.tls_cert, a->cfg.tls_key, &bad_part, errmsg) != 0) {
            char where[1200];
            ud_writer_config_where(&a->cfg, "http",
                                   bad_part == UD_HTTP_TLS_KEY ? "tls_key" : "tls_cert", where,
                                   sizeof where);
            fprintf(stderr, "unison-writer: %s: %s\n", where, errmsg);
            return EXIT_USAGE;
        }
    }

    if (cli.check_only) {
        printf("configuration ok: node %" PRIu64 " of cluster \"%s\", %u peer(s), data in %s, "
               "http %s, resp %s, raft %s\n",
               a->cfg.node_id, a->cfg.cluster_id, a->cfg.npeers, a->cfg.data_dir,
               a->cfg.http_listen, a->cfg.resp_listen[0] ? a->cfg.resp_listen : "off",
               a->cfg.raft_listen);
        return EXIT_OK;
    }

    ud_cli_apply_log_level(&cli, a->cfg.log_level);
    return -1;
}

/* An out-of-band catch-up could not bring this node back (no peer known, local storage failure):
 * it cannot take part in raft, so it stops. */
static void catchup_failed(struct ud_writer *w, int rc)
{
    (void)rc;
    begin_stop(app_of(w), EXIT_FAILED);
}

/* Starts every part in order; on failure the parts that started are stopped by the caller. */
static int start(struct app *a, char *errmsg)
{
    struct ud_writer_config *c = &a->cfg;
    int rc;
    /* One process per data directory: the namespaces lock themselves, raft's directory does not. */
    if ((rc = ud_dir_create(c->data_dir, errmsg)) != 0 ||
        (rc = ud_dir_lock(c->data_dir, &a->lock_fd, errmsg)) != 0)
        return rc;

    char root[1100];
    snprintf(root, sizeof root, "%s/%s", c->data_dir, UD_WRITER_NS_SUBDIR);
    /* In a cluster, a namespace with a damaged WAL is set aside and fetched again from a peer
     * before raft starts: until then this node neither votes nor leads. */
    struct ud_writer_damaged damaged = {.w = &a->w, .root = root};
    rc = ud_registry_open_damaged(root, &c->engine, ud_writer_set_aside_damaged, &damaged,
                                  &a->w.registry, errmsg);
    if (rc != 0) {
        ud_catchup_plan_free(&damaged.plan);
        return ud_errwrap(errmsg, rc, "open namespaces"); /* errmsg names the directory */
    }

    if ((rc = ud_writer_submit_init(&a->w, errmsg)) != 0) {
        ud_catchup_plan_free(&damaged.plan);
        return ud_errwrap(errmsg, rc, "write path");
    }
    a->submit_started = 1;
    rc = ud_writer_raft_begin(&a->w, &damaged.plan, catchup_failed, errmsg);
    ud_catchup_plan_free(&damaged.plan);
    if (rc != 0)
        return ud_errwrap(errmsg, rc, "raft");
    a->raft_started = 1;
    if ((rc = ud_writer_cluster_init(&a->w, errmsg)) != 0)
        return rc;
    if ((rc = ud_writer_http_start(&a->w, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "http");
    a->http_started = 1;
    if (c->resp_listen[0] != '\0') {
        if ((rc = ud_writer_resp_start(&a->w, errmsg)) != 0)
            return ud_errwrap(errmsg, rc, "resp");
        a->resp_started = 1;
    }
    log_listeners(a);
    if (c->ports_file[0] != '\0' && (rc = write_ports_file(a, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "ports file");
    start_default_ns(a);
    return 0;
}

int main(int argc, char **argv)
{
    static struct app app; /* large (the configuration): not on the stack */
    struct app *a = &app;
    a->lock_fd = -1;
    int rc = configure(a, argc, argv);
    if (rc >= 0)
        return rc;

    /* A closed client socket must be an error on write, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);

    const struct ud_writer_config *c = &a->cfg;
    ud_cli_raise_open_files(LOG);
    ud_info(LOG, "unison-writer %s starting: node %" PRIu64 " of cluster \"%s\", data in %s",
            UD_VERSION, c->node_id, c->cluster_id, c->data_dir);

    if (uv_loop_init(&a->loop) != 0) {
        ud_error(LOG, "cannot create the event loop");
        return EXIT_FAILED;
    }
    a->w.loop = &a->loop;
    a->w.config = &a->cfg;
    uv_timer_init(&a->loop, &a->ns_timer);
    uv_timer_init(&a->loop, &a->stop_timer);
    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_init(&a->loop, &a->sigint);
    a->ns_timer.data = a->stop_timer.data = a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, signal_cb, SIGTERM);
    uv_signal_start(&a->sigint, signal_cb, SIGINT);

    char errmsg[UD_ERRMSG_SIZE] = "";
    rc = start(a, errmsg);
    if (rc != 0) {
        ud_error(LOG, "start failed: %s", errmsg);
        begin_stop(a, EXIT_FAILED);
    } else {
        ud_info(LOG, "ready");
    }

    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&a->stop_timer, handle_closed_cb);
    uv_close((uv_handle_t *)&a->sigterm, handle_closed_cb);
    uv_close((uv_handle_t *)&a->sigint, handle_closed_cb);
    uv_run(&a->loop, UV_RUN_NOWAIT); /* runs those close callbacks */
    if (uv_loop_close(&a->loop) != 0) {
        /* Handles another part left open (logged by the linger timer): the process exit ends
         * them. The loop is not freed, which is harmless this late. */
        ud_debug(LOG, "event loop still has open handles at exit");
    }
    ud_registry_close(a->w.registry);
    if (a->ports_written[0] != '\0')
        unlink(a->ports_written);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    ud_info(LOG, "stopped (exit status %d)", a->exit_code);
    return a->exit_code;
}
