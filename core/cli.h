/*
 * Command lines of the serving binaries: flags that set configuration keys, applied after the
 * configuration file whatever their order in argv, plus the flags every binary has
 * (-c/--config FILE, --set SECTION.KEY=VALUE, --check-config, -V/--version, -h/--help).
 */
#ifndef UD_CORE_CLI_H
#define UD_CORE_CLI_H

#include <stddef.h>
#include <stdio.h>

#define UD_CLI_MAX_SETS 64

/* A binary's own flag: --name VALUE (or -s VALUE) sets key to VALUE. */
struct ud_cli_flag {
    const char *name; /* long name without "--" */
    char short_name;  /* 0: none */
    const char *key;  /* "section.key" */
    int off_is_empty; /* 1: the value "off" sets the key to "" (a listener turned off) */
};

struct ud_cli_set {
    const char *key;   /* borrowed from the flag table, or from the parser (static storage) */
    const char *value; /* borrowed from argv */
};

struct ud_cli {
    const char *config_path; /* NULL: none */
    struct ud_cli_set sets[UD_CLI_MAX_SETS];
    size_t nsets;
    int log_level_flag; /* server.log_level came from a flag */
    int check_only;     /* --check-config */
};

/*
 * Parses argv for program prog (messages start with "prog: ") with the binary's flags.
 * Returns -1 to go on with *out filled, or the exit status to leave with: 0 after --version
 * (printing "prog version") or --help (usage(stdout)), 2 after a usage error (printed to stderr,
 * naming the flag and pointing to --help).
 */
int ud_cli_parse(int argc, char **argv, const char *prog, const char *version,
                 const struct ud_cli_flag *flags, size_t nflags, void (*usage)(FILE *out),
                 struct ud_cli *out);

/* Sets the process's log level from the configured level name (debug, info, warn, error). The
 * precedence: a --log-level (or --set server.log_level) flag, then UD_LOG_LEVEL from the
 * environment (read by core/log), then the configuration file. */
void ud_cli_apply_log_level(const struct ud_cli *cli, const char *level);

/*
 * Raises the process's soft limit of open files to its hard limit and logs the limit now in force
 * under module (or why it could not be read or raised). A serving binary holds two descriptors per
 * HTTP connection (the lingering close, core/linger.h) besides its WAL segments, LMDB files and
 * peers, and a soft limit of 1,024, common as a default, would refuse clients after a few hundred
 * connections.
 */
void ud_cli_raise_open_files(const char *module);

#endif
