/* Directories: creating a path with its missing parents, the one way every module does it. */
#ifndef UD_CORE_DIR_H
#define UD_CORE_DIR_H

/*
 * Creates directory path and any missing parents (mode 0755, like mkdir -p); existing ones are
 * fine. Does not fsync: callers that need the new entries durable sync the parents themselves.
 * Returns 0, UD_EINVAL (empty path or longer than PATH_MAX) or the errno's UD_E* code with errmsg
 * naming the directory that could not be made ("create directory /a/b: Permission denied").
 */
int ud_dir_create(const char *path, char *errmsg);

#endif
