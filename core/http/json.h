/*
 * Response building for the HTTP API: a growable JSON text buffer with correct string escaping,
 * and strict base64 (RFC 4648 standard alphabet, padded) in both directions. No h2o, no jansson.
 */
#ifndef UD_CORE_HTTP_JSON_H
#define UD_CORE_HTTP_JSON_H

#include <stddef.h>
#include <stdint.h>

/*
 * A JSON (or any text) buffer. Errors are sticky: after an allocation failure every append is a
 * no-op and err is UD_ENOMEM, so builders check once at the end. Free p with ud_jbuf_free.
 */
struct ud_jbuf {
    char *p; /* owned; NUL-terminated while err == 0 */
    size_t len;
    size_t cap;
    int err;
};

void ud_jbuf_init(struct ud_jbuf *j);
void ud_jbuf_free(struct ud_jbuf *j);
void ud_jbuf_raw(struct ud_jbuf *j, const char *s, size_t n);
/* Appends a NUL-terminated literal without escaping. */
void ud_jbuf_lit(struct ud_jbuf *j, const char *s);
void ud_jbuf_printf(struct ud_jbuf *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a quoted JSON string. Bytes that are not valid UTF-8 become U+FFFD (JSON text must be
 * UTF-8; binary keys are returned base64-encoded where the API promises exactness). */
void ud_jbuf_str(struct ud_jbuf *j, const void *s, size_t n);
/* Appends a quoted base64 string of data. */
void ud_jbuf_b64(struct ud_jbuf *j, const void *data, size_t n);
void ud_jbuf_u64(struct ud_jbuf *j, uint64_t v);
/* Writes v in decimal to out (room for 20 bytes, no NUL written). Returns the length. */
size_t ud_json_u64(char *out, uint64_t v);

/* Bytes of the base64 text of n bytes (with padding, without NUL). */
size_t ud_b64_encoded_len(size_t n);
/* Encodes n bytes into out (ud_b64_encoded_len(n) bytes, no NUL written). Returns that length. */
size_t ud_b64_encode(const void *data, size_t n, char *out);
/* Largest possible decoded size of len characters of base64. */
size_t ud_b64_decoded_max(size_t len);
/*
 * Strict decode: standard alphabet, length a multiple of 4, '=' only as the last one or two
 * characters, unused bits of the last character zero, no whitespace. out holds at least
 * ud_b64_decoded_max(len) bytes. Returns 0 and *outlen, or UD_EINVAL.
 */
int ud_b64_decode(const char *in, size_t len, uint8_t *out, size_t *outlen);

/* 1 when s[0..n) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF), else 0. */
int ud_utf8_valid(const void *s, size_t n);

#endif
