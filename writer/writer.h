/*
 * The unison-writer process: one libuv loop runs raft, the HTTP and RESP front ends and the FSM.
 * Each part is started and stopped by main.c in order; handlers reach the others through this.
 */
#ifndef UD_WRITER_WRITER_H
#define UD_WRITER_WRITER_H

#include <stdint.h>
#include <uv.h>

#include "core/registry.h"
#include "writer/config.h"

struct ud_raft_node; /* raft/node.h */
struct ud_submitter; /* writer/submit.c */
struct ud_cluster;   /* writer/cluster.c */
struct ud_http_server;
struct ud_resp_server;
struct ud_metrics;

struct ud_writer {
    uv_loop_t *loop;
    struct ud_writer_config *config;
    struct ud_registry *registry; /* every namespace of this writer */
    struct ud_raft_node *raft;
    struct ud_submitter *submitter;
    struct ud_cluster *cluster; /* forwarding, consistency, cluster admin */
    struct ud_http_server *http;
    struct ud_resp_server *resp;
    struct ud_metrics *metrics;
    int http_port; /* bound ports, reported in the log and the ports file */
    int https_port;
    int resp_port;
    int raft_port;
    int stopping; /* set on SIGTERM/SIGINT: listeners closed, in-flight requests finishing */
};

/* Each front end: start binds its listener(s) and records the port; stop closes the listener and
 * calls done once every in-flight request has been answered. Implemented by their modules. */
int ud_writer_raft_start(struct ud_writer *w, char *errmsg);
void ud_writer_raft_stop(struct ud_writer *w, void (*done)(struct ud_writer *w));
int ud_writer_submit_init(struct ud_writer *w, char *errmsg);
void ud_writer_submit_close(struct ud_writer *w);
int ud_writer_http_start(struct ud_writer *w, char *errmsg);
void ud_writer_http_stop(struct ud_writer *w, void (*done)(struct ud_writer *w));
int ud_writer_resp_start(struct ud_writer *w, char *errmsg);
void ud_writer_resp_stop(struct ud_writer *w, void (*done)(struct ud_writer *w));

/* Raft state for /status/leader, /readyz and INFO: 1 when this node leads. */
int ud_writer_is_leader(struct ud_writer *w);

#endif
