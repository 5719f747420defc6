/*
 * The digest of an HTTP write that carries an Idempotency-Key (docs/raft.md "Idempotency"): what
 * identifies the request, so that a retry under the same key is recognised as the same request
 * and a different one under it is refused. It goes into the raft command with the key and is
 * kept in the FSM's window; only the node that received the request computes it, so every writer
 * compares the same bytes.
 */
#ifndef UD_WRITER_HTTP_DIGEST_H
#define UD_WRITER_HTTP_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "proto/command.h"

struct ud_http_req;

/*
 * The request's Idempotency-Key and its digest (ud_http_request_digest), taken together wherever
 * a keyed HTTP write is submitted: 1 with *key, *key_len and out set; 0 when the request has no key
 * (*key NULL, *key_len 0, out untouched). Take it while the body is there (the server drops it
 * once the handler returns).
 */
int ud_http_key_digest(const struct ud_http_req *r, const char **key, size_t *key_len,
                       uint8_t out[UD_COMMAND_DIGEST_SIZE]);

/* The header that carries a digest from a follower to the leader's internal records endpoint,
 * as UD_COMMAND_DIGEST_SIZE * 2 lowercase hex digits. */
#define UD_HTTP_DIGEST_HEADER "unison-request-digest"

/*
 * SHA-256, cut to UD_COMMAND_DIGEST_SIZE bytes, of the method, the path (which names the
 * namespace and the route), the query and the body's bytes, each length-prefixed. A follower
 * forwards a write with all four unchanged, so the leader computes the same digest as a writer
 * the client reached directly.
 */
void ud_http_request_digest(const struct ud_http_req *r, uint8_t out[UD_COMMAND_DIGEST_SIZE]);

/* The digest the internal records endpoint was sent (UD_HTTP_DIGEST_HEADER): 1 and out; 0 when
 * the header is absent (a follower of an earlier version: the digest is unknown); -1 when it is
 * present but not 32 lowercase hex digits, with why (why_size bytes) saying what is wrong. */
int ud_http_forwarded_digest(const struct ud_http_req *r, uint8_t out[UD_COMMAND_DIGEST_SIZE],
                             char *why, size_t why_size);

#endif
