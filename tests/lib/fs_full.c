/* A file layer whose disk can fill (fs_full.h). */
#include "tests/lib/fs_full.h"

#include <string.h>
#include <unistd.h>

#include "core/err.h"

static int full_open(struct ud_fs *fs, const char *path, int create, uint64_t size,
                     struct ud_fs_file **file, uint8_t **map, uint64_t *map_size, char *errmsg)
{
    struct ud_test_full_fs *d = (struct ud_test_full_fs *)fs;
    if (create && atomic_load(&d->full) &&
        (d->dir == NULL || strncmp(path, d->dir, strlen(d->dir)) == 0)) {
        usleep((useconds_t)atomic_load(&d->fail_ms) * 1000u);
        atomic_fetch_add(&d->refused, 1);
        return ud_errf(errmsg, UD_ENOSPC, "preallocate %s: No space left on device", path);
    }
    return ud_fs_posix()->open(ud_fs_posix(), path, create, size, file, map, map_size, errmsg);
}

void ud_test_full_fs_init(struct ud_test_full_fs *d)
{
    d->fs = *ud_fs_posix();
    d->fs.open = full_open;
    d->dir = NULL;
    atomic_init(&d->full, 0);
    atomic_init(&d->fail_ms, 0);
    atomic_init(&d->refused, 0);
}
