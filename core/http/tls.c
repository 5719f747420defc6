/* The TLS server context of the HTTP front end: certificate chain and key from PEM files, with
 * errors that say which file is wrong and how, so configuration checks can name the key. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/http/http_int.h"

/* A file that cannot be opened says why in errno's words, which OpenSSL's error queue garbles. */
static int readable(const char *path, char *errmsg)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return ud_errf(errmsg, UD_EINVAL, "%s: %s", path, strerror(errno));
    fclose(f);
    return 0;
}

/* The reason of the newest OpenSSL error ("no start line", "key values mismatch"). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "unknown error";
}

int ud_http_tls_ctx_new(const char *cert, const char *key, SSL_CTX **out, int *bad_part,
                        char *errmsg)
{
    *out = NULL;
    *bad_part = UD_HTTP_TLS_CERT;
    if (readable(cert, errmsg) != 0)
        return UD_EINVAL;
    *bad_part = UD_HTTP_TLS_KEY;
    if (readable(key, errmsg) != 0)
        return UD_EINVAL;
    *bad_part = 0;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        ud_errf(errmsg, UD_ENOMEM, "TLS context: %s", ssl_reason());
        SSL_CTX_free(ctx);
        return UD_ENOMEM;
    }
    int rc = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        *bad_part = UD_HTTP_TLS_CERT;
        rc = ud_errf(errmsg, UD_EINVAL, "%s: no PEM certificate chain could be read (%s)", cert,
                     ssl_reason());
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        /* A key that does not belong to the certificate fails here already in OpenSSL 3. */
        unsigned long e = ERR_peek_last_error();
        *bad_part = UD_HTTP_TLS_KEY;
        if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            rc = ud_errf(errmsg, UD_EINVAL, "%s does not match the certificate in %s", key, cert);
        else
            rc = ud_errf(errmsg, UD_EINVAL, "%s: no PEM private key could be read (%s)", key,
                         ssl_reason());
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        *bad_part = UD_HTTP_TLS_KEY;
        rc = ud_errf(errmsg, UD_EINVAL, "%s does not match the certificate in %s", key, cert);
    }
    ERR_clear_error();
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

int ud_http_tls_check(const char *cert, const char *key, int *bad_part, char *errmsg)
{
    SSL_CTX *ctx;
    int rc = ud_http_tls_ctx_new(cert, key, &ctx, bad_part, errmsg);
    if (rc == 0)
        SSL_CTX_free(ctx);
    return rc;
}
