/* Setting aside a leader's raft snapshot that does not decode here (raft/set_aside.h). */
#include "raft/set_aside.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/dir.h"
#include "core/err.h"
#include "core/log.h"

#define LOG "raft"

#define RECORD_NAME "raft-snapshot-undecodable"
#define ASIDE_NAME  "raft-set-aside"

int ud_raft_record_undecodable(const char *data_dir, uint64_t term, uint64_t index, char *errmsg)
{
    char path[PATH_MAX], text[64];
    snprintf(path, sizeof path, "%s/" RECORD_NAME, data_dir);
    int len = snprintf(text, sizeof text, "%" PRIu64 " %" PRIu64 "\n", term, index);
    return ud_dir_write_file(path, text, (size_t)len, UD_DIR_SYNC, errmsg);
}

/* raft_uv's names of a snapshot: "snapshot-{term}-{index}-{timestamp}" and its ".meta". */
static int snapshot_file_of(const char *name, uint64_t term, uint64_t index)
{
    unsigned long long t, i, ts;
    int end = 0;
    if (sscanf(name, "snapshot-%llu-%llu-%llu%n", &t, &i, &ts, &end) != 3)
        return 0;
    if (name[end] != '\0' && strcmp(name + end, ".meta") != 0)
        return 0;
    return t == term && i == index;
}

/* Empties the set-aside directory: only the newest undecodable copy is kept (a leader of a newer
 * format sends one at every attempt). The files of the snapshot being set aside stay: a crash
 * between its two renames left one of them there already. */
static int clear_aside(const char *aside, uint64_t term, uint64_t index, char *errmsg)
{
    DIR *d = opendir(aside);
    if (d == NULL)
        return ud_errf(errmsg, ud_err_from_errno(errno), "open directory %s: %s", aside,
                       strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || snapshot_file_of(e->d_name, term, index))
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", aside, e->d_name);
        if (unlink(path) != 0)
            rc = ud_errf(errmsg, ud_err_from_errno(errno), "remove %s: %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}

/* Moves the snapshot's files from raft_dir into aside (aside NULL: only counts them); *moved
 * counts them. */
static int move_snapshot(const char *raft_dir, const char *aside, uint64_t term, uint64_t index,
                         int *moved, char *errmsg)
{
    DIR *d = opendir(raft_dir);
    if (d == NULL)
        return ud_errf(errmsg, ud_err_from_errno(errno), "open directory %s: %s", raft_dir,
                       strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!snapshot_file_of(e->d_name, term, index))
            continue;
        if (aside == NULL) {
            (*moved)++;
            continue;
        }
        char from[PATH_MAX], to[PATH_MAX];
        snprintf(from, sizeof from, "%s/%s", raft_dir, e->d_name);
        snprintf(to, sizeof to, "%s/%s", aside, e->d_name);
        if (rename(from, to) != 0)
            rc = ud_errf(errmsg, ud_err_from_errno(errno), "move %s to %s: %s", from, to,
                         strerror(errno));
        else
            (*moved)++;
    }
    closedir(d);
    return rc;
}

int ud_raft_set_aside_undecodable(const char *data_dir, const char *raft_dir, uint64_t *index,
                                  char *errmsg)
{
    char record[PATH_MAX], aside[PATH_MAX], text[64] = "";
    *index = 0;
    snprintf(record, sizeof record, "%s/" RECORD_NAME, data_dir);
    FILE *f = fopen(record, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        return ud_errf(errmsg, ud_err_from_errno(errno), "open %s: %s", record, strerror(errno));
    }
    int read_failed = fgets(text, sizeof text, f) == NULL && ferror(f);
    fclose(f);
    if (read_failed)
        return ud_errf(errmsg, UD_EIO, "read %s", record);
    unsigned long long term, idx;
    int end = 0;
    if (sscanf(text, "%llu %llu\n%n", &term, &idx, &end) != 2 || end == 0 || idx == 0)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "%s does not hold the term and index of a raft snapshot", record);
    snprintf(aside, sizeof aside, "%s/" ASIDE_NAME, data_dir);
    int found = 0, moved = 0;
    int rc = move_snapshot(raft_dir, NULL, term, idx, &found, errmsg);
    if (rc == 0 && found > 0) {
        rc = ud_dir_create(aside, errmsg);
        if (rc == 0)
            rc = clear_aside(aside, term, idx, errmsg);
        if (rc == 0)
            rc = move_snapshot(raft_dir, aside, term, idx, &moved, errmsg);
        if (rc == 0)
            rc = ud_dir_sync(aside, errmsg);
        if (rc == 0)
            rc = ud_dir_sync(raft_dir, errmsg);
    }
    if (rc != 0)
        return ud_errwrap(errmsg, rc,
                          "setting aside raft snapshot at index %llu (term %llu), which does not "
                          "decode here",
                          idx, term);
    if (unlink(record) != 0 && errno != ENOENT)
        return ud_errf(errmsg, ud_err_from_errno(errno), "remove %s: %s", record, strerror(errno));
    if ((rc = ud_dir_sync(data_dir, errmsg)) != 0)
        return rc;
    if (moved > 0)
        ud_warn(LOG,
                "raft snapshot at index %llu (term %llu), which did not decode here, moved to %s "
                "(kept for inspection until the next one): raft starts from this node's last "
                "own snapshot or from nothing, and the leader sends its log or its snapshot "
                "again",
                idx, term, aside);
    else
        ud_info(LOG, "raft snapshot at index %llu (term %llu) recorded in %s is no longer in %s",
                idx, term, record, raft_dir);
    *index = idx;
    return 0;
}
