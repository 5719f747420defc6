/* Error table, message formatting and the always-on assertion. */
#include "core/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ud_strerror(int code)
{
    switch (code) {
#define UD_ERR_CASE(name, value, text)                                                             \
    case value:                                                                                    \
        return text;
        UD_ERRORS(UD_ERR_CASE)
#undef UD_ERR_CASE
    default:
        return "unknown error";
    }
}

int ud_err_from_errno(int errnum)
{
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
        return UD_ENOSPC;
    case ENOMEM:
        return UD_ENOMEM;
    case ENOENT:
        return UD_ENOTFOUND;
    case EEXIST:
        return UD_EEXIST;
    case EINVAL:
        return UD_EINVAL;
    default:
        return UD_EIO;
    }
}

int ud_errf(char *errmsg, int code, const char *fmt, ...)
{
    if (errmsg != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg, UD_ERRMSG_SIZE, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ud_err_indoubt(char *out, size_t size, const char *fmt, ...)
{
    char cause[UD_ERRMSG_SIZE * 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cause, sizeof cause, fmt, ap);
    va_end(ap);
    snprintf(out, size, "%s (%s)", ud_strerror(UD_EINDOUBT), cause);
    return UD_EINDOUBT;
}

int ud_errwrap(char *errmsg, int code, const char *fmt, ...)
{
    if (errmsg == NULL)
        return code;
    char prefix[UD_ERRMSG_SIZE];
    char old[UD_ERRMSG_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, errmsg, sizeof old);
    old[sizeof old - 1] = '\0';
    if (old[0] == '\0')
        snprintf(errmsg, UD_ERRMSG_SIZE, "%s: %s", prefix, ud_strerror(code));
    else
        snprintf(errmsg, UD_ERRMSG_SIZE, "%s: %s", prefix, old);
    return code;
}

void ud_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "level=fatal module=assert msg=\"assertion failed: %s\" at=%s:%d\n", expr, file,
            line);
    fflush(stderr);
    abort();
}
