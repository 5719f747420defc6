/* Error codes shared by every module: one X-macro table generates the enum and ud_strerror(). */
#ifndef UD_CORE_ERR_H
#define UD_CORE_ERR_H

#include <stddef.h>

/* Size of every errmsg buffer in the project. Messages are one line, without trailing newline. */
#define UD_ERRMSG_SIZE 256

/* X(name, value, description). Values are stable: they may appear in logs and tests. */
#define UD_ERRORS(X)                                                                               \
    X(UD_OK, 0, "success")                                                                         \
    X(UD_EINVAL, 1, "invalid argument")                                                            \
    X(UD_ENOMEM, 2, "out of memory")                                                               \
    X(UD_EIO, 3, "input/output error")                                                             \
    X(UD_ENOSPC, 4, "no space left on device")                                                     \
    X(UD_ECORRUPT, 5, "corrupt data")                                                              \
    X(UD_ENOTFOUND, 6, "not found")                                                                \
    X(UD_EEXIST, 7, "already exists")                                                              \
    X(UD_EBUSY, 8, "busy")                                                                         \
    X(UD_ELIMIT, 9, "size limit exceeded")                                                         \
    X(UD_ELOCKED, 10, "locked by another process")                                                 \
    X(UD_EAGAIN, 11, "no new data yet")                                                            \
    X(UD_EGONE, 12, "no longer retained")                                                          \
    X(UD_ECLOSED, 13, "closed")                                                                    \
    X(UD_ETXN, 14, "transaction state does not allow this")                                        \
    X(UD_ECONFLICT, 15, "conflicting concurrent operation")                                        \
    X(UD_ETIMEDOUT, 16, "timed out")                                                               \
    X(UD_ETRUNCATED, 17, "input truncated")                                                        \
    X(UD_EVERSION, 18, "unsupported format version")                                               \
    X(UD_ERANGE, 19, "value out of range")                                                         \
    X(UD_EMAPFULL, 20, "storage map full")                                                         \
    X(UD_EINDOUBT, 21, "outcome unknown: the write may have been committed")                       \
    X(UD_EKEYREUSED, 22, "idempotency key used for a different request")                           \
    X(UD_EPRECONDITION, 23, "precondition failed")

enum ud_error {
#define UD_ERR_ENUM(name, value, text) name = value,
    UD_ERRORS(UD_ERR_ENUM)
#undef UD_ERR_ENUM
};

/* Returns a static description of code; "unknown error" for codes outside the table. */
const char *ud_strerror(int code);

/* Returns the UD_E* code for a C errno value (ENOSPC -> UD_ENOSPC, ENOMEM -> UD_ENOMEM, else
 * UD_EIO). */
int ud_err_from_errno(int errnum);

/*
 * Formats a message into errmsg (UD_ERRMSG_SIZE bytes, may be NULL) and returns code, so that
 * failure paths read `return ud_errf(errmsg, UD_EIO, "open %s: %s", path, strerror(errno));`.
 */
int ud_errf(char *errmsg, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Prefixes errmsg in place with context ("open segment 17: " + old message) and returns code.
 * This is how each layer adds context on the way up.
 */
int ud_errwrap(char *errmsg, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * The message of a write whose outcome is unknown: ud_strerror(UD_EINDOUBT) and " (<cause>)",
 * the cause formatted from fmt, into out (size bytes). Every layer that answers a write in doubt
 * words it so (docs/http-api.md "Outcome unknown"). Returns UD_EINDOUBT.
 */
int ud_err_indoubt(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The code of a failure of this node's own storage, as a replicated apply may report it: a full
 * disk and memory keep theirs, anything else (a damaged store, a leftover file) is UD_EIO, so no
 * local fault reads as one of the outcomes every replica reaches alike (docs/raft.md "Storage
 * failures are not outcomes").
 */
static inline int ud_err_local(int rc)
{
    return rc == UD_ENOSPC || rc == UD_ENOMEM ? rc : UD_EIO;
}

/* Invariant checks that guard persisted data: on in every build type. */
#define UD_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ud_assert_fail(#cond, __FILE__, __LINE__);                                             \
    } while (0)

_Noreturn void ud_assert_fail(const char *expr, const char *file, int line);

#endif
