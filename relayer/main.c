/* unison-relayer: flags, configuration, the parts started in order, a clean stop on a signal. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
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
#include "core/http_client.h"
#include "core/log.h"
#include "core/registry.h"
#include "relayer/config.h"
#include "relayer/relayer.h"

#ifndef UD_VERSION
#define UD_VERSION "unknown"
#endif

#define LOG "relayer"

#define EXIT_OK     0
#define EXIT_FAILED 1
#define EXIT_USAGE  2

/*
 * Stopping, each step started by the previous one's callback:
 *   RUNNING --signal--> FOLLOWERS (transfers cancelled, apply threads joined)
 *           --> FRONTENDS (HTTP and RESP stop; in-flight requests finish)
 *           --> CLOSING (HTTP client closed, namespaces flushed) --loop empty--> exit
 */
enum stage { STAGE_RUNNING, STAGE_FRONTENDS, STAGE_CLOSING };

struct app {
    struct ud_relayer r;
    struct ud_relayer_config cfg;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t stop_timer;
    enum stage stage;
    int exit_code;
    int frontends_pending;
    int lock_fd;
    int discover_started;
    char ports_written[1100];
};

static struct app g_app;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: unison-relayer --upstream URL[,URL...] [options]\n"
            "\n"
            "Follows namespaces of an upstream (a writer of a cluster or another relayer): tails\n"
            "its WAL stream, verifies and applies every record, bootstraps from its snapshot when\n"
            "empty or too far behind, and serves reads over HTTP and RESP. Writes are refused\n"
            "(403 / -READONLY) with the upstream's address.\n"
            "\n"
            "Options (flags override the configuration file):\n"
            "  -c, --config FILE          TOML configuration (docs/configuration.md)\n"
            "  -u, --upstream URL[,URL]   upstreams, failed over in order [relayer] upstreams\n"
            "  -n, --namespaces LIST      ns[,ns...] to follow, each optionally ns=URL|URL\n"
            "                             (default: every namespace of the upstreams)\n"
            "  -d, --data-dir DIR         data directory              [server] data_dir\n"
            "      --http HOST:PORT       HTTP listener, port 0 = any  [http] listen\n"
            "      --resp HOST:PORT       RESP listener, \"off\" = none  [resp] listen\n"
            "      --id ID                name reported in acks        [relayer] id\n"
            "      --ports-file FILE      write the bound ports as JSON once listening\n"
            "      --log-level LEVEL      debug, info, warn or error\n"
            "      --set SECTION.KEY=VALUE any other key\n"
            "      --check-config         check the configuration and flags, then exit\n"
            "  -V, --version              print the version and exit\n"
            "  -h, --help                 print this help and exit\n"
            "\n"
            "SIGTERM or SIGINT stops cleanly (exit status 0); a second signal exits at once.\n"
            "Exit status: 0 after a clean stop, 1 on a failure, 2 on bad options or "
            "configuration.\n");
}

/* Flags that set configuration keys (core/cli.h adds -c, --set, --check-config, -V, -h). */
static const struct ud_cli_flag relayer_flags[] = {
    {"upstream", 'u', "relayer.upstreams", 0},
    {"namespaces", 'n', "relayer.namespaces", 0},
    {"data-dir", 'd', "server.data_dir", 0},
    {"http", 0, "http.listen", 0},
    {"resp", 0, "resp.listen", 1},
    {"id", 0, "relayer.id", 0},
    {"ports-file", 0, "server.ports_file", 0},
    {"log-level", 0, "server.log_level", 0},
};

static int configure(struct app *a, int argc, char **argv)
{
    struct ud_cli cli;
    int rc = ud_cli_parse(argc, argv, "unison-relayer", UD_VERSION, relayer_flags,
                          sizeof relayer_flags / sizeof relayer_flags[0], usage, &cli);
    if (rc >= 0)
        return rc;
    const char *config_path = cli.config_path;
    char errmsg[UD_ERRMSG_SIZE];
    ud_relayer_config_defaults(&a->cfg);
    if (config_path != NULL && ud_relayer_config_load(&a->cfg, config_path, errmsg) != 0) {
        fprintf(stderr, "unison-relayer: %s\n", errmsg);
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < cli.nsets; i++) {
        if (ud_relayer_config_set(&a->cfg, cli.sets[i].key, cli.sets[i].value, errmsg) != 0) {
            fprintf(stderr, "unison-relayer: %s\n", errmsg);
            return EXIT_USAGE;
        }
    }
    if (ud_relayer_config_finish(&a->cfg, errmsg) != 0) {
        fprintf(stderr, "unison-relayer: %s\n", errmsg);
        return EXIT_USAGE;
    }
    /* An unreadable certificate is a configuration error: found before the data directory is
     * touched, and by --check-config (as in the writer). */
    if (a->cfg.tls_cert[0] != '\0') {
        int bad_part;
        if (ud_http_tls_check(a->cfg.tls_cert, a->cfg.tls_key, &bad_part, errmsg) != 0) {
            char where[1200];
            ud_relayer_config_where(&a->cfg, "http",
                                    bad_part == UD_HTTP_TLS_KEY ? "tls_key" : "tls_cert", where,
                                    sizeof where);
            fprintf(stderr, "unison-relayer: %s: %s\n", where, errmsg);
            return EXIT_USAGE;
        }
    }
    if (cli.check_only) {
        printf("configuration ok: %u upstream(s), %u namespace(s) listed%s, data in %s, http %s, "
               "resp %s\n",
               a->cfg.nupstreams, a->cfg.nnamespaces,
               a->cfg.nnamespaces == 0 ? " (all discovered)" : "", a->cfg.data_dir,
               a->cfg.http_listen, a->cfg.resp_listen[0] ? a->cfg.resp_listen : "off");
        return EXIT_OK;
    }
    ud_cli_apply_log_level(&cli, a->cfg.log_level);
    return -1;
}

/* --- files ----------------------------------------------------------------------------------- */

static int write_ports_file(struct app *a, char *errmsg)
{
    char resp[16] = "null", https[16] = "null", json[160];
    if (a->r.resp != NULL)
        snprintf(resp, sizeof resp, "%d", a->r.resp_port);
    if (a->r.https_port > 0)
        snprintf(https, sizeof https, "%d", a->r.https_port);
    int n = snprintf(json, sizeof json, "{\"http\":%d,\"resp\":%s,\"https\":%s}\n", a->r.http_port,
                     resp, https);
    int rc = ud_dir_write_file(a->cfg.ports_file, json, (size_t)n, 0, errmsg);
    if (rc != 0)
        return rc;
    snprintf(a->ports_written, sizeof a->ports_written, "%s", a->cfg.ports_file);
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* A crash during a bootstrap or a snapshot download leaves a dot-entry (the registry ignores
 * them): remove them, the follower starts that bootstrap over. */
static void remove_leftovers(struct app *a)
{
    DIR *d = opendir(a->r.ns_root);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ".bootstrap-", 11) != 0 &&
            strncmp(de->d_name, ".snapshot-", 10) != 0)
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", a->r.ns_root, de->d_name);
        ud_info(LOG, "removing %s left by an interrupted bootstrap", path);
        nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
}

/* A namespace whose WAL is damaged (docs/relayer.md "A damaged copy"): the copy is the upstream's,
 * so it is moved aside, kept for inspection, and discovery bootstraps the namespace again. */
static int set_aside_damaged(void *arg, const char *name, const char *why)
{
    struct app *a = arg;
    return ud_registry_set_aside(a->r.ns_root, name, why,
                                 "it is bootstrapped again from the upstream");
}

/* --- stopping -------------------------------------------------------------------------------- */

static void handle_closed_cb(uv_handle_t *h)
{
    (void)h;
}

static void client_closed_cb(void *arg)
{
    (void)arg;
}

static void enter_closing(struct app *a)
{
    a->stage = STAGE_CLOSING;
    ud_http_client_close(a->r.client, client_closed_cb, a);
    a->r.client = NULL;
    size_t failed = 0;
    if (a->r.registry != NULL)
        ud_registry_flush_all(a->r.registry, &failed);
    if (failed > 0)
        a->exit_code =
            EXIT_FAILED; /* the WAL still holds every record: the next start replays it */
    uv_unref((uv_handle_t *)&a->sigterm);
    uv_unref((uv_handle_t *)&a->sigint);
    uv_timer_stop(&a->stop_timer);
    uv_close((uv_handle_t *)&a->stop_timer, handle_closed_cb);
}

static void frontend_stopped(struct ud_relayer *r)
{
    struct app *a = (struct app *)r;
    if (--a->frontends_pending == 0)
        enter_closing(a);
}

static void followers_stopped(struct ud_relayer *r)
{
    struct app *a = (struct app *)r;
    a->stage = STAGE_FRONTENDS;
    a->frontends_pending = 3; /* HTTP, RESP, and this function */
    ud_relayer_http_stop(r, frontend_stopped);
    ud_relayer_resp_stop(r, frontend_stopped);
    frontend_stopped(r);
}

static void stop_timer_cb(uv_timer_t *t)
{
    struct app *a = t->data;
    ud_error(LOG, "stop did not finish within %u ms; exiting now", a->cfg.shutdown_timeout_ms);
    _exit(EXIT_FAILED);
}

static void begin_stop(struct app *a, int exit_code)
{
    if (a->r.stopping)
        return;
    a->r.stopping = 1;
    a->exit_code = exit_code;
    if (a->cfg.shutdown_timeout_ms > 0) {
        uv_timer_start(&a->stop_timer, stop_timer_cb, a->cfg.shutdown_timeout_ms, 0);
        uv_unref((uv_handle_t *)&a->stop_timer);
    }
    if (a->discover_started)
        ud_relayer_discover_stop(&a->r);
    ud_relayer_followers_stop(&a->r, followers_stopped);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    struct app *a = s->data;
    if (a->r.stopping) {
        ud_warn(LOG, "second signal: exiting now");
        _exit(EXIT_FAILED);
    }
    ud_info(LOG, "%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    begin_stop(a, EXIT_OK);
}

/* --- starting -------------------------------------------------------------------------------- */

static int start(struct app *a, char *errmsg)
{
    struct ud_relayer_config *c = &a->cfg;
    int rc;
    if ((rc = ud_dir_create(c->data_dir, errmsg)) != 0 ||
        (rc = ud_dir_lock(c->data_dir, &a->lock_fd, errmsg)) != 0)
        return rc;
    /* A writer's data directory (its raft log and cluster id beside the namespaces): a relayer
     * would append its upstream's records to the writer's WALs under LSNs the writer's raft log
     * does not know. */
    char probe[1100];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/cluster-id", c->data_dir);
    if (stat(probe, &st) == 0)
        return ud_errf(errmsg, UD_EINVAL,
                       "data directory %s is a writer's (it holds cluster-id): give the relayer a "
                       "directory of its own",
                       c->data_dir);
    snprintf(a->r.ns_root, sizeof a->r.ns_root, "%s/%s", c->data_dir, UD_RELAYER_NS_SUBDIR);
    if ((rc = ud_dir_create(a->r.ns_root, errmsg)) != 0)
        return rc;
    remove_leftovers(a);
    if ((rc = ud_registry_open_damaged(a->r.ns_root, &c->engine, set_aside_damaged, a,
                                       &a->r.registry, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "open namespaces in %s", a->r.ns_root);
    if ((rc = ud_http_client_new(&a->loop, &a->r.client, errmsg)) != 0)
        return rc;
    if ((rc = ud_relayer_http_start(&a->r, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "http");
    if ((rc = ud_relayer_resp_start(&a->r, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "resp");
    if (c->id[0] == '\0')
        snprintf(c->id, sizeof c->id, "relayer-%ld-%d", (long)gethostid(), a->r.http_port);
    ud_info(LOG, "listening: http port %d%s, resp %s%d", a->r.http_port,
            a->r.https_port > 0 ? " (and https)" : "", a->r.resp != NULL ? "port " : "off ",
            a->r.resp_port);
    if (c->ports_file[0] != '\0' && (rc = write_ports_file(a, errmsg)) != 0)
        return ud_errwrap(errmsg, rc, "ports file");
    a->discover_started = 1; /* its timer exists from here on, even if a follow fails */
    return ud_relayer_discover_start(&a->r, errmsg);
}

int main(int argc, char **argv)
{
    struct app *a = &g_app;
    a->lock_fd = -1;
    int rc = configure(a, argc, argv);
    if (rc >= 0)
        return rc;
    signal(SIGPIPE, SIG_IGN);
    ud_cli_raise_open_files(LOG);
    ud_info(LOG, "unison-relayer %s starting: data in %s", UD_VERSION, a->cfg.data_dir);
    if (uv_loop_init(&a->loop) != 0) {
        ud_error(LOG, "cannot create the event loop");
        return EXIT_FAILED;
    }
    a->r.loop = &a->loop;
    a->r.config = &a->cfg;
    uv_timer_init(&a->loop, &a->stop_timer);
    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_init(&a->loop, &a->sigint);
    a->stop_timer.data = a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, signal_cb, SIGTERM);
    uv_signal_start(&a->sigint, signal_cb, SIGINT);

    char errmsg[UD_ERRMSG_SIZE] = "";
    if ((rc = start(a, errmsg)) != 0) {
        ud_error(LOG, "start failed: %s", errmsg);
        begin_stop(a, EXIT_FAILED);
    } else {
        ud_info(LOG, "ready");
    }
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&a->sigterm, handle_closed_cb);
    uv_close((uv_handle_t *)&a->sigint, handle_closed_cb);
    uv_run(&a->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&a->loop) != 0)
        ud_debug(LOG, "event loop still has open handles at exit");
    ud_relayer_followers_free(&a->r);
    ud_registry_close(a->r.registry);
    if (a->ports_written[0] != '\0')
        unlink(a->ports_written);
    if (a->lock_fd >= 0)
        close(a->lock_fd);
    ud_info(LOG, "stopped (exit status %d)", a->exit_code);
    return a->exit_code;
}
