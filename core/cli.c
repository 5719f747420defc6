/* Command lines of the serving binaries (core/cli.h). */
#include "core/cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "core/log.h"

#define EXIT_OK    0
#define EXIT_USAGE 2

/* getopt_long values: the binary's flags from FLAG_BASE on, the common ones below it. */
enum { OPT_SET = 200, OPT_CHECK, FLAG_BASE = 256 };

#define MAX_FLAGS 32

static int add_set(struct ud_cli *out, const char *prog, const char *key, const char *value)
{
    if (out->nsets >= UD_CLI_MAX_SETS) {
        fprintf(stderr, "%s: too many options\n", prog);
        return EXIT_USAGE;
    }
    out->sets[out->nsets++] = (struct ud_cli_set){key, value};
    if (strcmp(key, "server.log_level") == 0)
        out->log_level_flag = 1;
    return -1;
}

int ud_cli_parse(int argc, char **argv, const char *prog, const char *version,
                 const struct ud_cli_flag *flags, size_t nflags, void (*usage)(FILE *out),
                 struct ud_cli *out)
{
    /* The key names of --set flags: static, so that the sets outlive this call. */
    static char names[UD_CLI_MAX_SETS][64];
    memset(out, 0, sizeof *out);
    if (nflags > MAX_FLAGS) {
        fprintf(stderr, "%s: too many flags defined\n", prog);
        return EXIT_USAGE;
    }
    struct option options[MAX_FLAGS + 6];
    char shorts[2 * MAX_FLAGS + 8] = ":c:Vh";
    size_t n = 0, ns = strlen(shorts);
    options[n++] = (struct option){"config", required_argument, NULL, 'c'};
    options[n++] = (struct option){"set", required_argument, NULL, OPT_SET};
    options[n++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK};
    options[n++] = (struct option){"version", no_argument, NULL, 'V'};
    options[n++] = (struct option){"help", no_argument, NULL, 'h'};
    for (size_t i = 0; i < nflags; i++) {
        options[n++] = (struct option){flags[i].name, required_argument, NULL, FLAG_BASE + (int)i};
        if (flags[i].short_name != 0) {
            shorts[ns++] = flags[i].short_name;
            shorts[ns++] = ':';
        }
    }
    shorts[ns] = '\0';
    options[n] = (struct option){NULL, 0, NULL, 0};

    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, shorts, options, NULL)) != -1) {
        int rc = -1;
        switch (c) {
        case 'c':
            out->config_path = optarg;
            break;
        case OPT_CHECK:
            out->check_only = 1;
            break;
        case OPT_SET: {
            const char *eq = strchr(optarg, '=');
            if (eq == NULL || eq == optarg || (size_t)(eq - optarg) >= sizeof names[0]) {
                fprintf(stderr, "%s: --set %s: expected SECTION.KEY=VALUE\n", prog, optarg);
                return EXIT_USAGE;
            }
            if (out->nsets >= UD_CLI_MAX_SETS) {
                fprintf(stderr, "%s: too many --set flags\n", prog);
                return EXIT_USAGE;
            }
            memcpy(names[out->nsets], optarg, (size_t)(eq - optarg));
            names[out->nsets][eq - optarg] = '\0';
            rc = add_set(out, prog, names[out->nsets], eq + 1);
            break;
        }
        case 'V':
            printf("%s %s\n", prog, version);
            return EXIT_OK;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case ':':
            fprintf(stderr, "%s: %s needs a value (see --help)\n", prog, argv[optind - 1]);
            return EXIT_USAGE;
        case '?':
            fprintf(stderr, "%s: unknown option %s (see --help)\n", prog, argv[optind - 1]);
            return EXIT_USAGE;
        default: {
            const struct ud_cli_flag *f = NULL;
            if (c >= FLAG_BASE && (size_t)(c - FLAG_BASE) < nflags)
                f = &flags[c - FLAG_BASE];
            for (size_t i = 0; f == NULL && i < nflags; i++)
                if (flags[i].short_name == c)
                    f = &flags[i];
            if (f == NULL) {
                fprintf(stderr, "%s: unknown option %s (see --help)\n", prog, argv[optind - 1]);
                return EXIT_USAGE;
            }
            const char *value = f->off_is_empty && strcmp(optarg, "off") == 0 ? "" : optarg;
            rc = add_set(out, prog, f->key, value);
            break;
        }
        }
        if (rc >= 0)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument %s (see --help)\n", prog, argv[optind]);
        return EXIT_USAGE;
    }
    /* Read by the logger itself (core/log.c), which would take a misspelt level as info. */
    const char *env = getenv("UD_LOG_LEVEL");
    if (env != NULL && strcmp(env, "debug") != 0 && strcmp(env, "info") != 0 &&
        strcmp(env, "warn") != 0 && strcmp(env, "error") != 0) {
        fprintf(stderr, "%s: UD_LOG_LEVEL=%.40s: expected debug, info, warn or error\n", prog, env);
        return EXIT_USAGE;
    }
    return -1;
}

void ud_cli_apply_log_level(const struct ud_cli *cli, const char *level)
{
    if (!cli->log_level_flag && getenv("UD_LOG_LEVEL") != NULL)
        return;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(level, names[i]) == 0)
            ud_log_set_level((enum ud_log_level)i);
}

void ud_cli_raise_open_files(const char *module)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        ud_warn(module, "open files: the limit cannot be read (%s); left as it is",
                strerror(errno));
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = rl.rlim_max;
        else
            ud_warn(module, "open files: raising the limit to %llu failed (%s)",
                    (unsigned long long)rl.rlim_max, strerror(errno));
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        ud_info(module, "open files: no limit");
    else
        ud_info(module, "open files: up to %llu", (unsigned long long)rl.rlim_cur);
}
