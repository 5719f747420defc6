/* Base64 decoding 32 characters at a time with AVX2 (the bulk of ud_b64_decode). */
#ifndef UD_HTTP_B64_VECTOR_H
#define UD_HTTP_B64_VECTOR_H

#include <stddef.h>
#include <stdint.h>

/*
 * Decodes whole 32-character blocks of in[0..len) (standard alphabet, no '='), 24 bytes each,
 * into out, and stops before the first block holding any other byte. Returns the characters
 * decoded (a multiple of 32; 0 without AVX2): the caller decodes and checks the rest.
 */
size_t ud_b64_decode_blocks(const uint8_t *in, size_t len, uint8_t *out);

#endif
