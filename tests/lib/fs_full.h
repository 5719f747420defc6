/*
 * A test file layer over the real one on a disk that can fill: while `full` is set, creating a
 * file (below `dir`, when it is set) waits fail_ms (a slow disk) and fails with UD_ENOSPC, as
 * preallocating a WAL segment does on a full disk; `refused` counts those failures. Everything
 * else goes to ud_fs_posix().
 */
#ifndef UD_TESTS_FS_FULL_H
#define UD_TESTS_FS_FULL_H

#include <stdatomic.h>

#include "core/fs.h"

struct ud_test_full_fs {
    struct ud_fs fs; /* first: the layer finds its state from the fs pointer */
    const char *dir; /* NULL: every path */
    atomic_int full;
    atomic_int fail_ms;
    atomic_int refused;
};

/* Not full, no delay, no path restriction; d->fs is the layer to hand to the engine. */
void ud_test_full_fs_init(struct ud_test_full_fs *d);

#endif
