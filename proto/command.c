/* Raft command encoding and its validating decoder (docs/format-command.md). */
#include "proto/command.h"

#include <stdio.h>
#include <string.h>

#include "core/endian.h"
#include "core/err.h"
#include "proto/record.h"

int ud_command_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > UD_COMMAND_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

const char *ud_command_kind_name(int kind)
{
    switch (kind) {
    case UD_COMMAND_RECORDS:
        return "records";
    case UD_COMMAND_NS_CREATE:
        return "ns_create";
    case UD_COMMAND_NS_DELETE:
        return "ns_delete";
    case UD_COMMAND_MEMBER:
        return "member";
    default:
        return "?";
    }
}

/* --- decoding --------------------------------------------------------------------------------- */

/* Reads a name field at buf[*off]; the name must be valid. Errors call it `what`, followed by
 * `number` unless that is negative: a group's number is formatted only when its name is bad, since
 * every entry is decoded on every writer's path to its answer. */
static int decode_name(const uint8_t *buf, size_t len, size_t *off,
                       char out[UD_COMMAND_NAME_MAX + 1], const char *what, long number,
                       char *errmsg)
{
    size_t at = *off;
    size_t n = len - at >= 1 ? buf[at] : 0;
    if (len - at >= 1 && len - at - 1 >= n &&
        ud_command_name_valid((const char *)buf + at + 1, n)) {
        memcpy(out, buf + at + 1, n);
        out[n] = '\0';
        *off = at + 1 + n;
        return 0;
    }
    char label[48];
    if (number >= 0)
        snprintf(label, sizeof label, "%s %ld", what, number);
    else
        snprintf(label, sizeof label, "%s", what);
    if (len - at < 1)
        return ud_errf(errmsg, UD_ETRUNCATED, "%s name length at byte %zu: buffer ends", label, at);
    if (len - at - 1 < n)
        return ud_errf(errmsg, UD_ETRUNCATED, "%s name at byte %zu: %zu bytes, buffer ends", label,
                       at + 1, n);
    return ud_errf(errmsg, UD_ECORRUPT,
                   "%s name at byte %zu (%zu bytes) is not a namespace name "
                   "([A-Za-z0-9_-]{1,64})",
                   label, at + 1, n);
}

/* Validates one group starting at buf[*off] and moves past it. */
static int decode_group(const uint8_t *buf, size_t len, size_t *off, uint32_t gi,
                        uint32_t *nrecords, char *errmsg)
{
    char name[UD_COMMAND_NAME_MAX + 1];
    int rc = decode_name(buf, len, off, name, "group", (long)gi, errmsg);
    if (rc != 0)
        return rc;
    size_t at = *off;
    if (len - at < 4)
        return ud_errf(errmsg, UD_ETRUNCATED, "group %u record count at byte %zu: buffer ends", gi,
                       at);
    uint32_t n = ud_get_le32(buf + at);
    if (n == 0)
        return ud_errf(errmsg, UD_ECORRUPT, "group %u (namespace %s) at byte %zu has no records",
                       gi, name, at);
    at += 4;
    for (uint32_t i = 0; i < n; i++) {
        if (len - at < 4)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "group %u record %u length at byte %zu: buffer ends", gi, i, at);
        size_t rlen = ud_get_le32(buf + at);
        at += 4;
        if (len - at < rlen)
            return ud_errf(errmsg, UD_ETRUNCATED,
                           "group %u record %u at byte %zu: %zu bytes, buffer ends", gi, i, at,
                           rlen);
        struct ud_record rec;
        char rerr[UD_ERRMSG_SIZE] = "";
        rc = ud_record_decode(buf + at, rlen, &rec, rerr);
        if (rc != 0)
            return ud_errf(errmsg, UD_ECORRUPT, "group %u record %u at byte %zu: %s", gi, i, at,
                           rerr);
        if (rec.lsn != 0 || rec.raft_index != 0 || rec.raft_pos != 0)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "group %u record %u at byte %zu carries LSN %llu / raft position "
                           "%llu.%u; the FSM assigns them",
                           gi, i, at, (unsigned long long)rec.lsn,
                           (unsigned long long)rec.raft_index, rec.raft_pos);
        at += rlen;
    }
    *off = at;
    *nrecords += n;
    return 0;
}

/* Position just past the last record of each group, walked lazily over an already validated
 * groups section. */
struct group_walk {
    const uint8_t *p;
    uint32_t left; /* groups not walked yet */
    uint32_t end;  /* records up to the end of the current group */
};

static int next_group_end(struct group_walk *gw)
{
    if (gw->left == 0)
        return 0;
    gw->left--;
    const uint8_t *p = gw->p + 1 + gw->p[0];
    uint32_t n = ud_get_le32(p);
    p += 4;
    for (uint32_t i = 0; i < n; i++)
        p += 4 + (size_t)ud_get_le32(p);
    gw->p = p;
    gw->end += n;
    return 1;
}

/* The keys section of a RECORDS command at buf[*off]: ranges inside the command's records,
 * ascending, disjoint, each inside one group. */
static int decode_keys(const uint8_t *buf, size_t len, size_t *off, struct ud_command *cmd,
                       uint32_t ngroups, char *errmsg)
{
    size_t at = *off;
    if (len - at < 4)
        return ud_errf(errmsg, UD_ETRUNCATED, "key count at byte %zu: buffer ends", at);
    uint32_t n = ud_get_le32(buf + at);
    if (n == 0)
        return ud_errf(errmsg, UD_ECORRUPT, "key count at byte %zu is 0 with the keys flag", at);
    cmd->keys = buf + at;
    at += 4;
    size_t fixed = 9 + (cmd->key_digests ? UD_COMMAND_DIGEST_SIZE : 0);
    uint32_t next = 0;
    struct group_walk gw = {buf + UD_COMMAND_HEADER_SIZE, ngroups, 0};
    next_group_end(&gw);
    for (uint32_t i = 0; i < n; i++) {
        if (len - at < 9)
            return ud_errf(errmsg, UD_ETRUNCATED, "key %u at byte %zu: buffer ends", i, at);
        uint32_t first = ud_get_le32(buf + at), cnt = ud_get_le32(buf + at + 4);
        size_t kl = buf[at + 8];
        if (cnt == 0 || first < next || first > cmd->nrecords || cnt > cmd->nrecords - first)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "key %u at byte %zu covers records %u+%u: outside the %u records, "
                           "empty or overlapping the previous key",
                           i, at, first, cnt, cmd->nrecords);
        while (gw.end <= first && next_group_end(&gw))
            ;
        if (first + cnt > gw.end)
            return ud_errf(errmsg, UD_ECORRUPT, "key %u at byte %zu spans two groups", i, at);
        if (kl == 0 || kl > UD_COMMAND_KEY_MAX || len - at - 9 < kl)
            return ud_errf(errmsg, kl == 0 || kl > UD_COMMAND_KEY_MAX ? UD_ECORRUPT : UD_ETRUNCATED,
                           "key %u at byte %zu: length %zu (1..%d, within the buffer)", i, at, kl,
                           UD_COMMAND_KEY_MAX);
        if (len - at - 9 - kl < fixed - 9)
            return ud_errf(errmsg, UD_ETRUNCATED, "key %u at byte %zu: digest: buffer ends", i, at);
        next = first + cnt;
        at += fixed + kl;
    }
    cmd->nkeys = n;
    cmd->keys_len = at - *off;
    *off = at;
    return 0;
}

/* Conditions section: u32 count (>= 1) | (u32 pos | u8 kind | u64 lsn){count}, positions
 * ascending and inside the command's records. */
static int decode_conds(const uint8_t *buf, size_t len, size_t *off, struct ud_command *cmd,
                        char *errmsg)
{
    size_t at = *off;
    if (len - at < 4)
        return ud_errf(errmsg, UD_ETRUNCATED, "condition count at byte %zu: buffer ends", at);
    uint32_t n = ud_get_le32(buf + at);
    if (n == 0)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "condition count at byte %zu is 0 with the conditions flag", at);
    cmd->conds = buf + at;
    at += 4;
    uint32_t next = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (len - at < UD_COMMAND_COND_SIZE)
            return ud_errf(errmsg, UD_ETRUNCATED, "condition %u at byte %zu: buffer ends", i, at);
        uint32_t pos = ud_get_le32(buf + at);
        uint8_t kind = buf[at + 4];
        uint64_t lsn = ud_get_le64(buf + at + 5);
        if (pos < next || pos >= cmd->nrecords)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "condition %u at byte %zu names record %u: outside the %u records or "
                           "not after the previous condition's",
                           i, at, pos, cmd->nrecords);
        if (kind != UD_COMMAND_COND_LSN && kind != UD_COMMAND_COND_EXISTS)
            return ud_errf(errmsg, UD_ECORRUPT, "condition %u kind %u at byte %zu is unknown", i,
                           kind, at + 4);
        if (kind == UD_COMMAND_COND_EXISTS && lsn != 0)
            return ud_errf(errmsg, UD_ECORRUPT,
                           "condition %u at byte %zu: kind exists carries LSN %llu (must be 0)", i,
                           at + 5, (unsigned long long)lsn);
        next = pos + 1;
        at += UD_COMMAND_COND_SIZE;
    }
    cmd->nconds = n;
    cmd->conds_len = at - *off;
    *off = at;
    return 0;
}

/* MEMBER body: u64 id | u8 len | http | u8 len | resp. */
static int decode_member(const uint8_t *buf, size_t len, size_t *off, struct ud_command *cmd,
                         char *errmsg)
{
    size_t at = *off;
    if (len - at < 10)
        return ud_errf(errmsg, UD_ETRUNCATED, "member command at byte %zu: buffer ends", at);
    cmd->member_id = ud_get_le64(buf + at);
    if (cmd->member_id == 0)
        return ud_errf(errmsg, UD_ECORRUPT, "member id at byte %zu is 0", at);
    at += 8;
    char *out[2] = {cmd->member_http, cmd->member_resp};
    size_t max[2] = {UD_COMMAND_MEMBER_HTTP_MAX, UD_COMMAND_MEMBER_RESP_MAX};
    for (int i = 0; i < 2; i++) {
        if (len - at < 1)
            return ud_errf(errmsg, UD_ETRUNCATED, "member address at byte %zu: buffer ends", at);
        size_t n = buf[at];
        if (n > max[i] || len - at - 1 < n)
            return ud_errf(errmsg, n > max[i] ? UD_ECORRUPT : UD_ETRUNCATED,
                           "member address at byte %zu: %zu bytes", at, n);
        for (size_t k = 0; k < n; k++)
            if (buf[at + 1 + k] <= 0x20 || buf[at + 1 + k] >= 0x7f)
                return ud_errf(errmsg, UD_ECORRUPT, "member address at byte %zu: byte %zu", at, k);
        memcpy(out[i], buf + at + 1, n);
        out[i][n] = '\0';
        at += 1 + n;
    }
    *off = at;
    return 0;
}

int ud_command_decode(const uint8_t *buf, size_t len, struct ud_command *cmd, char *errmsg)
{
    memset(cmd, 0, sizeof *cmd);
    if (len > UD_COMMAND_MAX_SIZE)
        return ud_errf(errmsg, UD_ELIMIT, "command of %zu bytes exceeds the limit of %u bytes", len,
                       UD_COMMAND_MAX_SIZE);
    if (len < UD_COMMAND_HEADER_SIZE)
        return ud_errf(errmsg, UD_ETRUNCATED, "command of %zu bytes ends inside the %d-byte header",
                       len, UD_COMMAND_HEADER_SIZE);
    /* UD_EVERSION only for what a newer writer may write (a higher version, a flag bit not
     * defined here): the FSM stalls on it instead of recording a rejection (raft/fsm.c). */
    if (buf[0] > UD_COMMAND_VERSION)
        return ud_errf(errmsg, UD_EVERSION,
                       "command format %u is newer than this writer: upgrade it (it knows %d)",
                       buf[0], UD_COMMAND_VERSION);
    if (buf[0] != UD_COMMAND_VERSION)
        return ud_errf(errmsg, UD_ECORRUPT, "command version %u at byte 0 was never written",
                       buf[0]);
    uint8_t kind = buf[1];
    uint16_t flags = ud_get_le16(buf + 2);
    uint32_t count = ud_get_le32(buf + 4);
    const uint16_t known =
        UD_COMMAND_FLAG_KEYS | UD_COMMAND_FLAG_DIGESTS | UD_COMMAND_FLAG_CONDITIONS;
    const uint16_t keys_flags = flags & (uint16_t)~UD_COMMAND_FLAG_CONDITIONS;
    if ((flags & ~known) != 0)
        return ud_errf(errmsg, UD_EVERSION,
                       "command format %u with flags 0x%04x at byte 2 is newer than this writer: "
                       "upgrade it (it knows flags 0x%04x)",
                       buf[0], flags, known);
    if (flags != 0 && !(kind == UD_COMMAND_RECORDS &&
                        (keys_flags == 0 || keys_flags == UD_COMMAND_FLAG_KEYS ||
                         keys_flags == (UD_COMMAND_FLAG_KEYS | UD_COMMAND_FLAG_DIGESTS))))
        return ud_errf(errmsg, UD_ECORRUPT, "command flags 0x%04x at byte 2 are not allowed",
                       flags);
    size_t off = UD_COMMAND_HEADER_SIZE;
    int rc;
    switch (kind) {
    case UD_COMMAND_RECORDS: {
        if (count == 0)
            return ud_errf(errmsg, UD_ECORRUPT, "records command at byte 4 has no groups");
        for (uint32_t g = 0; g < count; g++) {
            if (off == len)
                return ud_errf(errmsg, UD_ETRUNCATED,
                               "records command announces %u groups; buffer ends after %u", count,
                               g);
            if ((rc = decode_group(buf, len, &off, g, &cmd->nrecords, errmsg)) != 0)
                return rc;
        }
        cmd->body_len = off - UD_COMMAND_HEADER_SIZE;
        cmd->key_digests = (flags & UD_COMMAND_FLAG_DIGESTS) != 0;
        if ((flags & UD_COMMAND_FLAG_KEYS) &&
            (rc = decode_keys(buf, len, &off, cmd, count, errmsg)) != 0)
            return rc;
        if ((flags & UD_COMMAND_FLAG_CONDITIONS) &&
            (rc = decode_conds(buf, len, &off, cmd, errmsg)) != 0)
            return rc;
        break;
    }
    case UD_COMMAND_MEMBER:
        if (count != 1)
            return ud_errf(errmsg, UD_ECORRUPT, "member command count %u at byte 4 must be 1",
                           count);
        if ((rc = decode_member(buf, len, &off, cmd, errmsg)) != 0)
            return rc;
        break;
    case UD_COMMAND_NS_CREATE:
    case UD_COMMAND_NS_DELETE:
        if (count != 1)
            return ud_errf(errmsg, UD_ECORRUPT, "%s command count %u at byte 4 must be 1",
                           ud_command_kind_name(kind), count);
        if ((rc = decode_name(buf, len, &off, cmd->ns, ud_command_kind_name(kind), -1, errmsg)) !=
            0)
            return rc;
        break;
    default:
        return ud_errf(errmsg, UD_ECORRUPT, "command kind %u at byte 1 is unknown", kind);
    }
    if (len - off >= 8 || len % 8 != 0)
        return ud_errf(errmsg, UD_ECORRUPT,
                       "%s command of %zu bytes: %zu trailing bytes after byte %zu (padding to a "
                       "multiple of 8 only)",
                       ud_command_kind_name(kind), len, len - off, off);
    for (size_t i = off; i < len; i++)
        if (buf[i] != 0)
            return ud_errf(errmsg, UD_ECORRUPT, "padding byte %zu of the %s command is not zero", i,
                           ud_command_kind_name(kind));
    cmd->version = buf[0];
    cmd->kind = kind;
    cmd->count = count;
    cmd->body = buf + UD_COMMAND_HEADER_SIZE;
    if (kind != UD_COMMAND_RECORDS)
        cmd->body_len = off - UD_COMMAND_HEADER_SIZE; /* without the padding */
    return 0;
}

void ud_command_keys_iter_init(struct ud_command_iter *it, const struct ud_command *cmd)
{
    it->p = cmd->nkeys > 0 ? cmd->keys + 4 : NULL;
    it->end = cmd->nkeys > 0 ? cmd->keys + cmd->keys_len : NULL;
    it->digests = cmd->key_digests;
}

int ud_command_next_key(struct ud_command_iter *it, struct ud_command_key *k)
{
    if (it->p == NULL || it->p >= it->end)
        return 0;
    k->first_pos = ud_get_le32(it->p);
    k->nrecords = ud_get_le32(it->p + 4);
    k->key_len = it->p[8];
    k->key = it->p + 9;
    k->digest = it->digests ? k->key + k->key_len : NULL;
    it->p += 9 + k->key_len + (it->digests ? UD_COMMAND_DIGEST_SIZE : 0);
    return 1;
}

void ud_command_conds_iter_init(struct ud_command_iter *it, const struct ud_command *cmd)
{
    it->p = cmd->nconds > 0 ? cmd->conds + 4 : NULL;
    it->end = cmd->nconds > 0 ? cmd->conds + cmd->conds_len : NULL;
    it->digests = 0;
}

int ud_command_next_cond(struct ud_command_iter *it, struct ud_command_cond *c)
{
    if (it->p == NULL || it->p >= it->end)
        return 0;
    c->pos = ud_get_le32(it->p);
    c->kind = it->p[4];
    c->lsn = ud_get_le64(it->p + 5);
    it->p += UD_COMMAND_COND_SIZE;
    return 1;
}

void ud_command_iter_init(struct ud_command_iter *it, const struct ud_command *cmd)
{
    it->p = cmd->body;
    it->end = cmd->body + (cmd->kind == UD_COMMAND_RECORDS ? cmd->body_len : 0);
}

int ud_command_next_group(struct ud_command_iter *it, struct ud_command_group *g)
{
    if (it->p >= it->end)
        return 0;
    size_t n = it->p[0];
    memcpy(g->ns, it->p + 1, n);
    g->ns[n] = '\0';
    const uint8_t *p = it->p + 1 + n;
    g->nrecords = ud_get_le32(p);
    p += 4;
    g->records = p;
    for (uint32_t i = 0; i < g->nrecords; i++)
        p += 4 + (size_t)ud_get_le32(p);
    g->len = (size_t)(p - g->records);
    it->p = p;
    return 1;
}

void ud_command_group_iter_init(struct ud_command_iter *it, const struct ud_command_group *g)
{
    it->p = g->records;
    it->end = g->records + g->len;
}

int ud_command_next_record(struct ud_command_iter *it, const uint8_t **rec, size_t *len)
{
    if (it->p >= it->end)
        return 0;
    *len = ud_get_le32(it->p);
    *rec = it->p + 4;
    it->p += 4 + *len;
    return 1;
}

/* --- encoding --------------------------------------------------------------------------------- */

size_t ud_command_group_size(const char *ns)
{
    return 1 + strlen(ns) + 4;
}

void ud_command_writer_init(struct ud_command_writer *w, uint8_t *buf, size_t cap)
{
    memset(w, 0, sizeof *w);
    w->buf = buf;
    w->cap = cap < UD_COMMAND_MAX_SIZE ? cap : UD_COMMAND_MAX_SIZE;
    if (w->cap < UD_COMMAND_HEADER_SIZE) {
        w->err = UD_ELIMIT;
        return;
    }
    buf[0] = UD_COMMAND_VERSION;
    buf[1] = UD_COMMAND_RECORDS;
    ud_put_le16(buf + 2, 0);
    ud_put_le32(buf + 4, 0);
    w->len = UD_COMMAND_HEADER_SIZE;
}

/* Closes the open group: an empty group is an error. */
static int close_group(struct ud_command_writer *w)
{
    if (w->group_count_at == 0)
        return 0;
    if (w->group_records == 0)
        return w->err = UD_EINVAL;
    ud_put_le32(w->buf + w->group_count_at, w->group_records);
    w->group_count_at = 0;
    w->group_records = 0;
    return 0;
}

int ud_command_writer_group(struct ud_command_writer *w, const char *ns)
{
    if (w->err != 0 || close_group(w) != 0)
        return w->err;
    if (w->keys_at != 0 || w->conds_at != 0)
        return w->err = UD_EINVAL; /* keys and conditions come after every group */
    size_t n = ns != NULL ? strlen(ns) : 0;
    if (!ud_command_name_valid(ns, n))
        return w->err = UD_EINVAL;
    if (w->cap - w->len < 1 + n + 4)
        return w->err = UD_ELIMIT;
    w->buf[w->len] = (uint8_t)n;
    memcpy(w->buf + w->len + 1, ns, n);
    w->len += 1 + n;
    w->group_count_at = w->len;
    w->len += 4;
    w->ngroups++;
    return 0;
}

int ud_command_writer_record(struct ud_command_writer *w, const uint8_t *rec, size_t len)
{
    if (w->err != 0)
        return w->err;
    if (w->group_count_at == 0 || w->keys_at != 0 || w->conds_at != 0 ||
        len < UD_RECORD_HEADER_SIZE)
        return w->err = UD_EINVAL;
    if (len > UD_RECORD_MAX_SIZE || w->cap - w->len < 4 || w->cap - w->len - 4 < len)
        return w->err = UD_ELIMIT;
    ud_put_le32(w->buf + w->len, (uint32_t)len);
    memcpy(w->buf + w->len + 4, rec, len);
    w->len += 4 + len;
    w->group_records++;
    w->records++;
    return 0;
}

size_t ud_command_key_size(size_t key_len)
{
    return 9 + key_len + UD_COMMAND_DIGEST_SIZE;
}

int ud_command_writer_key(struct ud_command_writer *w, uint32_t first_pos, uint32_t n,
                          const void *key, size_t key_len, const uint8_t *digest)
{
    if (w->err != 0)
        return w->err;
    if (w->keys_at == 0 && close_group(w) != 0)
        return w->err;
    if (w->conds_at != 0)
        return w->err = UD_EINVAL; /* keys come before the conditions */
    if (n == 0 || key_len == 0 || key_len > UD_COMMAND_KEY_MAX || first_pos < w->key_next ||
        first_pos > w->records || n > w->records - first_pos ||
        (w->nkeys > 0 && w->key_digests != (digest != NULL)))
        return w->err = UD_EINVAL;
    size_t dl = digest != NULL ? UD_COMMAND_DIGEST_SIZE : 0;
    size_t need = (w->keys_at == 0 ? 4 : 0) + 9 + key_len + dl;
    if (w->cap - w->len < need || w->len + need > UD_COMMAND_MAX_SIZE)
        return w->err = UD_ELIMIT;
    if (w->keys_at == 0) {
        w->keys_at = w->len;
        w->len += 4;
    }
    ud_put_le32(w->buf + w->len, first_pos);
    ud_put_le32(w->buf + w->len + 4, n);
    w->buf[w->len + 8] = (uint8_t)key_len;
    memcpy(w->buf + w->len + 9, key, key_len);
    if (digest != NULL)
        memcpy(w->buf + w->len + 9 + key_len, digest, dl);
    w->len += 9 + key_len + dl;
    w->key_digests = digest != NULL;
    w->nkeys++;
    w->key_next = first_pos + n;
    return 0;
}

int ud_command_writer_cond(struct ud_command_writer *w, uint32_t pos, uint8_t kind, uint64_t lsn)
{
    if (w->err != 0)
        return w->err;
    if (w->keys_at == 0 && w->conds_at == 0 && close_group(w) != 0)
        return w->err;
    if (pos < w->cond_next || pos >= w->records || !ud_command_cond_valid(kind, lsn))
        return w->err = UD_EINVAL;
    size_t need = (w->conds_at == 0 ? UD_COMMAND_CONDS_OVERHEAD : 0) + UD_COMMAND_COND_SIZE;
    if (w->cap - w->len < need)
        return w->err = UD_ELIMIT;
    if (w->conds_at == 0) {
        w->conds_at = w->len;
        w->len += UD_COMMAND_CONDS_OVERHEAD;
    }
    ud_put_le32(w->buf + w->len, pos);
    w->buf[w->len + 4] = kind;
    ud_put_le64(w->buf + w->len + 5, lsn);
    w->len += UD_COMMAND_COND_SIZE;
    w->nconds++;
    w->cond_next = pos + 1;
    return 0;
}

int ud_command_writer_finish(struct ud_command_writer *w, size_t *len)
{
    if (w->err != 0 || (w->keys_at == 0 && w->conds_at == 0 && close_group(w) != 0))
        return w->err;
    if (w->ngroups == 0)
        return w->err = UD_EINVAL;
    uint16_t flags = 0;
    if (w->keys_at != 0) {
        ud_put_le32(w->buf + w->keys_at, w->nkeys);
        flags = UD_COMMAND_FLAG_KEYS | (w->key_digests ? UD_COMMAND_FLAG_DIGESTS : 0);
    }
    if (w->conds_at != 0) {
        ud_put_le32(w->buf + w->conds_at, w->nconds);
        flags |= UD_COMMAND_FLAG_CONDITIONS;
    }
    ud_put_le16(w->buf + 2, flags);
    size_t padded = UD_COMMAND_ALIGN(w->len);
    if (padded > w->cap)
        return w->err = UD_ELIMIT;
    memset(w->buf + w->len, 0, padded - w->len);
    w->len = padded;
    ud_put_le32(w->buf + 4, w->ngroups);
    *len = w->len;
    return 0;
}

size_t ud_command_ns_size(const char *ns)
{
    return UD_COMMAND_ALIGN(UD_COMMAND_HEADER_SIZE + 1 + (ns != NULL ? strlen(ns) : 0));
}

int ud_command_encode_ns(enum ud_command_kind kind, const char *ns, uint8_t *buf, size_t cap,
                         size_t *len)
{
    size_t n = ns != NULL ? strlen(ns) : 0;
    if ((kind != UD_COMMAND_NS_CREATE && kind != UD_COMMAND_NS_DELETE) ||
        !ud_command_name_valid(ns, n))
        return UD_EINVAL;
    size_t need = UD_COMMAND_ALIGN(UD_COMMAND_HEADER_SIZE + 1 + n);
    if (cap < need)
        return UD_ELIMIT;
    memset(buf, 0, need);
    buf[0] = UD_COMMAND_VERSION;
    buf[1] = (uint8_t)kind;
    ud_put_le16(buf + 2, 0);
    ud_put_le32(buf + 4, 1);
    buf[8] = (uint8_t)n;
    memcpy(buf + 9, ns, n);
    *len = need;
    return 0;
}

size_t ud_command_member_size(const char *http, const char *resp)
{
    return UD_COMMAND_ALIGN(UD_COMMAND_HEADER_SIZE + 8 + 1 + strlen(http) + 1 + strlen(resp));
}

int ud_command_encode_member(uint64_t id, const char *http, const char *resp, uint8_t *buf,
                             size_t cap, size_t *len)
{
    size_t hl = strlen(http), rl = strlen(resp);
    if (id == 0 || hl > UD_COMMAND_MEMBER_HTTP_MAX || rl > UD_COMMAND_MEMBER_RESP_MAX)
        return UD_EINVAL;
    size_t need = ud_command_member_size(http, resp);
    if (cap < need)
        return UD_ELIMIT;
    memset(buf, 0, need);
    buf[0] = UD_COMMAND_VERSION;
    buf[1] = UD_COMMAND_MEMBER;
    ud_put_le32(buf + 4, 1);
    ud_put_le64(buf + 8, id);
    buf[16] = (uint8_t)hl;
    memcpy(buf + 17, http, hl);
    buf[17 + hl] = (uint8_t)rl;
    memcpy(buf + 18 + hl, resp, rl);
    *len = need;
    return 0;
}

int ud_command_cond_check(uint8_t kind, uint64_t lsn, uint64_t cur, char *errmsg)
{
    if (kind == UD_COMMAND_COND_EXISTS ? cur != 0 : cur == lsn)
        return 0;
    if (kind == UD_COMMAND_COND_EXISTS)
        return ud_errf(errmsg, UD_EPRECONDITION,
                       "precondition failed: If-Match * but the key does not exist");
    if (cur == 0)
        return ud_errf(errmsg, UD_EPRECONDITION,
                       "precondition failed: If-Match %llu but the key does not exist",
                       (unsigned long long)lsn);
    return ud_errf(errmsg, UD_EPRECONDITION,
                   "precondition failed: If-Match %llu but the key is at LSN %llu",
                   (unsigned long long)lsn, (unsigned long long)cur);
}
