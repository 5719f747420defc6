/* Helpers for tests: private temporary directories and deterministic random bytes. */
#ifndef UD_TESTS_TESTUTIL_H
#define UD_TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh directory under $UD_TEST_TMPDIR (or the build dir's tmp/, never tmpfs /tmp:
 * durability tests need a real file system) and returns its malloc'd path. Aborts on failure. */
char *ud_test_tmpdir(const char *tag);

/* Removes a directory tree (rm -rf). */
void ud_test_rmtree(const char *path);

/* xorshift64* generator: the same seed gives the same sequence on every machine. */
uint64_t ud_test_rand(uint64_t *state);
void ud_test_fill(uint64_t *state, void *buf, size_t len);

/* Resident anonymous memory of this process in KiB (file-backed maps excluded), -1 if unknown. */
long ud_test_rss_anon_kib(void);

#endif
