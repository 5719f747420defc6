/* Digest of a keyed HTTP write (writer/http_digest.h). */
#include "writer/http_digest.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/endian.h"
#include "core/hex.h"
#include "core/http/http.h"

static void put_part(EVP_MD_CTX *ctx, const void *p, size_t len)
{
    uint8_t n[8];
    ud_put_le64(n, len);
    EVP_DigestUpdate(ctx, n, sizeof n);
    if (len > 0)
        EVP_DigestUpdate(ctx, p, len);
}

void ud_http_request_digest(const struct ud_http_req *r, uint8_t out[UD_COMMAND_DIGEST_SIZE])
{
    static const char *const names[] = {"GET", "HEAD", "PUT", "POST", "DELETE"};
    static const unsigned methods[] = {UD_HTTP_GET, UD_HTTP_HEAD, UD_HTTP_PUT, UD_HTTP_POST,
                                       UD_HTTP_DELETE};
    unsigned m = ud_http_req_method(r);
    const char *method = "OTHER";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (methods[i] == m)
            method = names[i];
    size_t pl = 0, ql = 0, bl = 0;
    const char *path = ud_http_req_path(r, &pl);
    const char *query = ud_http_req_query(r, &ql);
    const uint8_t *body = ud_http_req_body(r, &bl);
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* The digest is replicated state: no writer may skip it, so no failure is survivable. */
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
        abort();
    put_part(ctx, method, strlen(method));
    put_part(ctx, path, path != NULL ? pl : 0);
    put_part(ctx, query, query != NULL ? ql : 0);
    put_part(ctx, body, body != NULL ? bl : 0);
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen < UD_COMMAND_DIGEST_SIZE)
        abort();
    EVP_MD_CTX_free(ctx);
    memcpy(out, md, UD_COMMAND_DIGEST_SIZE);
}

int ud_http_key_digest(const struct ud_http_req *r, const char **key, size_t *key_len,
                       uint8_t out[UD_COMMAND_DIGEST_SIZE])
{
    *key_len = 0;
    *key = ud_http_req_header(r, "idempotency-key", key_len);
    if (*key == NULL) {
        *key_len = 0;
        return 0;
    }
    ud_http_request_digest(r, out);
    return 1;
}

int ud_http_forwarded_digest(const struct ud_http_req *r, uint8_t out[UD_COMMAND_DIGEST_SIZE],
                             char *why, size_t why_size)
{
    size_t len = 0;
    const char *v = ud_http_req_header(r, UD_HTTP_DIGEST_HEADER, &len);
    if (v == NULL)
        return 0;
    if (len != 2 * UD_COMMAND_DIGEST_SIZE) {
        snprintf(why, why_size, "%s must be %d lowercase hex digits, not %zu bytes",
                 UD_HTTP_DIGEST_HEADER, 2 * UD_COMMAND_DIGEST_SIZE, len);
        return -1;
    }
    for (size_t i = 0; i < 2 * UD_COMMAND_DIGEST_SIZE; i++) {
        /* Lowercase only, as followers write it: one spelling per digest. */
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) {
            snprintf(why, why_size,
                     "%s must be %d lowercase hex digits: byte %zu is not one (0x%02x)",
                     UD_HTTP_DIGEST_HEADER, 2 * UD_COMMAND_DIGEST_SIZE, i, (unsigned char)v[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < UD_COMMAND_DIGEST_SIZE; i++)
        out[i] = (uint8_t)(ud_hex_digit(v[2 * i]) << 4 | ud_hex_digit(v[2 * i + 1]));
    return 1;
}
