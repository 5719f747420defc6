/*
 * libFuzzer target for the RESP request parser and the command layer. The input (after a first
 * byte choosing a piece size) is parsed whole and again arriving in pieces through a buffer that
 * moves; both must give the same commands and end the same way. Every command, encoded back as an
 * array of bulk strings, must parse to itself, and every protocol error must be a one-line reply.
 * For half of the inputs the commands are also executed against real namespaces (reads and
 * connection commands), all of them in one batch as the server runs one read's commands: each
 * must answer exactly one well-formed reply, in order. resp.dict holds the tokens that lead the
 * fuzzer to pipelined reads.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/resp/resp.h"
#include "core/resp/resp_cmd.h"

/* Small limits so that the fuzzer reaches them. */
static void limits(struct ud_resp_parser *p)
{
    p->max_bulk = 4096;
    p->max_args = 64;
    p->max_inline = 512;
    p->max_request = 16384;
}

/* --- the command layer over real namespaces --------------------------------------------------- */

static char root[256];
static struct ud_registry *reg;
static struct ud_resp_ctx *ctx;

static void cleanup(void)
{
    char cmd[300];
    ud_resp_ctx_free(ctx);
    ud_registry_close(reg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_resp: could not remove %s\n", root);
}

static void seed(struct ud_ns *ns)
{
    char errmsg[UD_ERRMSG_SIZE];
    static const char *const keys[] = {"a", "ab", "abc", "b", "k:1", "k:2", "x*y", "z"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (ud_ns_kv_put(ns, keys[i], strlen(keys[i]), "value", 5, NULL, errmsg) != 0)
            abort();
    if (ud_ns_kv_put(ns, "n\0l", 3, "v\0", 2, NULL, errmsg) != 0)
        abort();
    static const char *const rows[] = {"a", "h", "h2"};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct ud_col cols[2] = {{(const uint8_t *)"f", 1, (const uint8_t *)"1", 1},
                                 {(const uint8_t *)"g", 1, (const uint8_t *)"22", 2}};
        struct ud_row r = {(const uint8_t *)rows[i], strlen(rows[i]), cols, 2};
        if (ud_ns_row_put(ns, &r, NULL, errmsg) != 0)
            abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char errmsg[UD_ERRMSG_SIZE];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/fuzz-resp-XXXXXX", tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(root) == NULL)
        abort();
    struct ud_engine_options d;
    memset(&d, 0, sizeof d);
    d.sync_mode = UD_WAL_SYNC_NONE;
    d.segment_size = 1u << 20;
    d.map_size = 16u << 20;
    if (ud_registry_open(root, &d, &reg, errmsg) != 0 ||
        ud_registry_create(reg, "default", errmsg) != 0 ||
        ud_registry_create(reg, "other", errmsg) != 0)
        abort();
    struct ud_ns *ns;
    if (ud_registry_acquire(reg, "default", &ns) != 0)
        abort();
    seed(ns);
    ud_registry_release(reg, ns);
    struct ud_resp_ctx_options o;
    memset(&o, 0, sizeof o);
    o.registry = reg;
    o.default_ns = "default";
    o.max_clients = 10;
    if (ud_resp_ctx_new(&o, &ctx, errmsg) != 0)
        abort();
    atexit(cleanup);
    return 0;
}

/* Checks one complete reply at buf[*pos..len) and moves past it; -1 when malformed. */
static int check_reply(const uint8_t *buf, size_t len, size_t *pos, int depth)
{
    if (*pos >= len || depth > 8)
        return -1;
    uint8_t type = buf[*pos];
    const uint8_t *cr = memchr(buf + *pos, '\r', len - *pos);
    if (cr == NULL || (size_t)(cr - buf) + 1 >= len || cr[1] != '\n')
        return -1;
    size_t line_end = (size_t)(cr - buf);
    if (memchr(buf + *pos, '\n', line_end - *pos) != NULL)
        return -1;
    char num[32];
    size_t nl = line_end - *pos - 1;
    if (type == '+' || type == '-') {
        *pos = line_end + 2;
        return 0;
    }
    if (nl == 0 || nl >= sizeof num)
        return -1;
    memcpy(num, buf + *pos + 1, nl);
    num[nl] = '\0';
    char *end;
    long long n = strtoll(num, &end, 10);
    if (*end != '\0')
        return -1;
    *pos = line_end + 2;
    if (type == ':')
        return 0;
    if (type == '$') {
        if (n == -1)
            return 0;
        if (n < 0 || (size_t)n + 2 > len - *pos || buf[*pos + (size_t)n] != '\r' ||
            buf[*pos + (size_t)n + 1] != '\n')
            return -1;
        *pos += (size_t)n + 2;
        return 0;
    }
    if (type == '*') {
        if (n == -1)
            return 0;
        for (long long i = 0; i < n; i++)
            if (n < 0 || check_reply(buf, len, pos, depth + 1) != 0)
                return -1;
        return 0;
    }
    return -1;
}

/* Executes the commands of `enc` (arrays of bulk strings, as written by run): one reply each. */
static void execute(const struct ud_resp_buf *enc)
{
    struct ud_resp_parser p;
    struct ud_resp_session s;
    struct ud_resp_outq q;
    size_t at = 0, used, ran = 0;
    ud_resp_parser_init(&p);
    ud_resp_session_init(ctx, &s);
    ud_resp_outq_init(&q);
    /* All the commands in one batch, as the server runs the commands of one read: pipelined GETs
     * then share one engine read and leave their copies for the batch's end (resp_batch.c), and
     * every other command must first complete them. */
    ud_resp_batch_begin(ctx);
    size_t ends[64]; /* where each command's reply ends: a GET reserves its bytes at once */
    while (ran < 64 && at < enc->len &&
           ud_resp_parse(&p, enc->data + at, enc->len - at, &used) == UD_RESP_COMMAND) {
        at += used;
        if (ud_resp_exec(ctx, &s, &q, p.argc, p.argv, p.argvlen) != UD_RESP_EXEC_DONE)
            abort(); /* nothing is deferred here, so nothing may wait */
        ends[ran++] = q.ready.len;
    }
    ud_resp_batch_end(ctx);
    /* Exactly one well-formed reply per command, where that command put it. */
    size_t pos = 0;
    for (size_t i = 0; i < ran; i++)
        if (check_reply(q.ready.data, q.ready.len, &pos, 0) != 0 || pos != ends[i])
            abort();
    if (q.pending != 0 || pos != q.ready.len)
        abort();
    q.ready.len = 0;
    ud_resp_outq_detach(&q);
    ud_resp_parser_free(&p);
}

/* Parses input arriving in pieces of `piece` bytes (0: all at once). Commands are appended to out
 * as RESP arrays; the end state as a final marker line. */
static void run(const uint8_t *in, size_t len, size_t piece, struct ud_resp_buf *out)
{
    struct ud_resp_parser p;
    ud_resp_parser_init(&p);
    limits(&p);
    uint8_t *buf = NULL;
    size_t have = 0, at = 0;
    int status = UD_RESP_NEED_MORE;
    while (status != UD_RESP_PROTOCOL && at < len) {
        size_t n = piece == 0 ? len - at : (len - at < piece ? len - at : piece);
        uint8_t *nb = malloc(have + n + 1); /* a new address on every arrival */
        if (nb == NULL)
            abort();
        if (have > 0)
            memcpy(nb, buf, have);
        memcpy(nb + have, in + at, n);
        free(buf);
        buf = nb;
        have += n;
        at += n;
        for (;;) {
            size_t used = 0;
            status = ud_resp_parse(&p, buf, have, &used);
            if (used > have)
                abort();
            if (status == UD_RESP_PROTOCOL) {
                /* A one-line error that names the protocol fault. */
                if (strncmp(p.errmsg, "ERR Protocol error: ", 20) != 0 ||
                    strpbrk(p.errmsg, "\r\n") != NULL)
                    abort();
                ud_resp_buf_append(out, "!", 1);
                ud_resp_buf_append(out, p.errmsg, strlen(p.errmsg));
                break;
            }
            if (status == UD_RESP_COMMAND) {
                if (p.argc == 0 || p.argc > p.max_args || used == 0)
                    abort();
                ud_resp_add_array(out, p.argc);
                for (size_t i = 0; i < p.argc; i++) {
                    if (p.argvlen[i] > p.max_bulk)
                        abort();
                    ud_resp_add_bulk(out, p.argv[i], p.argvlen[i]);
                }
            }
            memmove(buf, buf + used, have - used);
            have -= used;
            if (status == UD_RESP_NEED_MORE)
                break;
        }
    }
    if (status != UD_RESP_PROTOCOL)
        ud_resp_buf_append(out, "?", 1);
    free(buf);
    ud_resp_parser_free(&p);
}

/* The commands of `enc` (arrays of bulk strings, as written by run) parse back to themselves. */
static void round_trip(const struct ud_resp_buf *enc)
{
    size_t end = enc->len;
    while (end > 0 && enc->data[end - 1] != '\n')
        end--; /* drop the end marker */
    struct ud_resp_buf again = {0};
    run(enc->data, end, 0, &again);
    if (again.len != end + 1 || memcmp(again.data, enc->data, end) != 0 || again.data[end] != '?')
        abort();
    ud_resp_buf_free(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = (size_t)(data[0] % 37) + 1;
    data++;
    size--;
    struct ud_resp_buf whole = {0}, pieces = {0};
    run(data, size, 0, &whole);
    run(data, size, piece, &pieces);
    if (whole.len != pieces.len || memcmp(whole.data, pieces.data, whole.len) != 0)
        abort();
    round_trip(&whole);
    if (data[-1] & 0x80)
        execute(&whole);
    ud_resp_buf_free(&whole);
    ud_resp_buf_free(&pieces);
    return 0;
}
