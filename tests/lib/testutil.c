/* Test helpers: temp dirs on the build's file system and a portable PRNG. */
#include "tests/lib/testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *ud_test_tmpdir(const char *tag)
{
    const char *base = getenv("UD_TEST_TMPDIR");
    char root[4096];
    if (base == NULL || base[0] == '\0') {
        if (getcwd(root, sizeof root - 8) == NULL)
            abort();
        strcat(root, "/tmp");
        base = root;
    }
    mkdir(base, 0755);
    char *path = NULL;
    if (asprintf(&path, "%s/%s-XXXXXX", base, tag) < 0)
        abort();
    if (mkdtemp(path) == NULL) {
        perror("mkdtemp");
        abort();
    }
    return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ud_test_rmtree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

uint64_t ud_test_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void ud_test_fill(uint64_t *state, void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        uint64_t r = ud_test_rand(state);
        size_t n = len < 8 ? len : 8;
        memcpy(p, &r, n);
        p += n;
        len -= n;
    }
}

long ud_test_rss_anon_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "RssAnon: %ld kB", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib;
}
