/* Directories: mkdir -p with errors that name the directory that failed. */
#include "core/dir.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"

int ud_dir_create(const char *path, char *errmsg)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return ud_errf(errmsg, UD_EINVAL, "directory path of %zu bytes is not usable", len);
    memcpy(buf, path, len + 1);
    /* Each prefix ending at a '/' (and the whole path) in turn; "a//b" just retries "a/". */
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ud_errf(errmsg, ud_err_from_errno(errno), "create directory %s: %s", buf,
                           strerror(errno));
        buf[i] = saved;
    }
    return 0;
}
