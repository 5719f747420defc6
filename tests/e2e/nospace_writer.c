/* Test build of unison-writer whose namespace WALs can be told that the disk is full. */

/*
 * unison-writer-nospace is unison-writer's own objects linked with this file and
 * -Wl,--wrap=ud_writer_config_finish (tests/e2e/meson.build), as unison-writer-powerloss is:
 * nothing in the product changes. The wrapper points the engine options of every namespace
 * (cfg->engine.fs) at the POSIX file layer with one difference: while the file named by
 * UD_NOSPACE_FLAG exists, creating a WAL segment fails with UD_ENOSPC, as the POSIX layer's
 * preallocation does on a full disk. That is where a full disk reaches a WAL (segments are
 * preallocated, records are stored into the mapping), so a test gets a writer whose disk fills
 * and empties on command, without root and without filling a real disk. raft's log and LMDB
 * keep writing: this is a full disk as the namespaces' storage sees it (docs/raft.md says what
 * raft 0.15 does when its own log cannot be written).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/fs.h"
#include "writer/config.h"

int __real_ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg);
int __wrap_ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg);

static struct ud_fs layer;
static char flag[PATH_MAX];

static int open_unless_full(struct ud_fs *fs, const char *path, int create, uint64_t size,
                            struct ud_fs_file **file, uint8_t **map, uint64_t *map_size,
                            char *errmsg)
{
    (void)fs;
    if (create && access(flag, F_OK) == 0)
        return ud_errf(errmsg, UD_ENOSPC, "create %s: preallocate %llu bytes: %s", path,
                       (unsigned long long)size, strerror(ENOSPC));
    return ud_fs_posix()->open(ud_fs_posix(), path, create, size, file, map, map_size, errmsg);
}

int __wrap_ud_writer_config_finish(struct ud_writer_config *cfg, char *errmsg)
{
    int rc = __real_ud_writer_config_finish(cfg, errmsg);
    const char *f = getenv("UD_NOSPACE_FLAG");
    if (rc != 0 || f == NULL || f[0] == '\0')
        return rc;
    snprintf(flag, sizeof flag, "%s", f);
    layer = *ud_fs_posix();
    layer.open = open_unless_full;
    cfg->engine.fs = &layer;
    fprintf(stderr, "no-space test build: WAL segments cannot be created while %s exists\n", flag);
    return 0;
}
