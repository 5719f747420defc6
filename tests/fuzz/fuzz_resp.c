/*
 * libFuzzer target for the RESP request parser. The input (after a first byte choosing a piece
 * size) is parsed whole and again arriving in pieces through a buffer that moves; both must give
 * the same commands and end the same way. Every command, encoded back as an array of bulk strings,
 * must parse to itself, and every protocol error must be a one-line reply.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/resp/resp.h"

/* Small limits so that the fuzzer reaches them. */
static void limits(struct ud_resp_parser *p)
{
    p->max_bulk = 4096;
    p->max_args = 64;
    p->max_inline = 512;
    p->max_request = 16384;
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
    ud_resp_buf_free(&whole);
    ud_resp_buf_free(&pieces);
    return 0;
}
