/* Logging: a whole line is formatted first and written with one write() so lines never interleave.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int min_level = -1;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void ud_log_set_level(enum ud_log_level level)
{
    min_level = (int)level;
}

static int current_level(void)
{
    if (min_level < 0) {
        const char *env = getenv("UD_LOG_LEVEL");
        min_level = UD_LOG_INFO;
        for (int i = 0; env != NULL && i < 4; i++)
            if (strcmp(env, level_names[i]) == 0)
                min_level = i;
    }
    return min_level;
}

void ud_log(enum ud_log_level level, const char *module, const char *fmt, ...)
{
    if ((int)level < current_level())
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}
