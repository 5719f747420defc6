/* One-line structured logging: `ts level module msg`, to stderr, safe from any thread. */
#ifndef UD_CORE_LOG_H
#define UD_CORE_LOG_H

enum ud_log_level { UD_LOG_DEBUG, UD_LOG_INFO, UD_LOG_WARN, UD_LOG_ERROR };

/* Messages below level are dropped. Default UD_LOG_INFO; UD_LOG_LEVEL=debug|info|warn|error
 * overrides. */
void ud_log_set_level(enum ud_log_level level);

/* Writes one line: "2026-11-21T06:00:00.123Z info wal segment 3 sealed ...". */
void ud_log(enum ud_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ud_debug(mod, ...) ud_log(UD_LOG_DEBUG, mod, __VA_ARGS__)
#define ud_info(mod, ...)  ud_log(UD_LOG_INFO, mod, __VA_ARGS__)
#define ud_warn(mod, ...)  ud_log(UD_LOG_WARN, mod, __VA_ARGS__)
#define ud_error(mod, ...) ud_log(UD_LOG_ERROR, mod, __VA_ARGS__)

#endif
