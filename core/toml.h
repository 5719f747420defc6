/*
 * A small strict TOML reader for configuration files: the subset our binaries use, nothing more.
 *
 * Accepted: `# comments`, `[section]` headers with bare names, `key = value` lines with bare keys,
 * and values that are basic strings ("..." with \" \\ \b \t \n \f \r \uXXXX \UXXXXXXXX), literal
 * strings ('...'), decimal integers (optional sign, `_` between digits, no leading zeros, within
 * int64), booleans, and arrays of strings or of integers (one type per array, may span lines, may
 * end with a comma). Keys before the first header belong to the section "".
 *
 * Everything else is an error naming file:line: duplicate keys or sections, unterminated strings,
 * text after a value, invalid UTF-8, control characters, and the TOML features we do not use
 * (floats, dates, dotted or quoted keys, inline tables, arrays of tables, multi-line strings),
 * each said by name so that a user knows the file is valid TOML we chose not to read.
 */
#ifndef UD_CORE_TOML_H
#define UD_CORE_TOML_H

#include <stddef.h>
#include <stdint.h>

/* Largest file ud_toml_parse_file reads; configuration files are a few KiB. */
#define UD_TOML_MAX_FILE (1u << 20)

enum ud_toml_type {
    UD_TOML_STRING,
    UD_TOML_INTEGER,
    UD_TOML_BOOLEAN,
    UD_TOML_ARRAY,
};

struct ud_toml_value {
    enum ud_toml_type type;
    int line;  /* where the value starts: later errors about it name this line */
    char *str; /* STRING: NUL-terminated UTF-8 (never contains NUL) */
    size_t str_len;
    int64_t integer;             /* INTEGER */
    int boolean;                 /* BOOLEAN: 0 or 1 */
    enum ud_toml_type item_type; /* ARRAY: STRING or INTEGER (STRING when empty) */
    struct ud_toml_value *items; /* ARRAY: nitems values, each with its own line */
    size_t nitems;
};

/* One `key = value` line. */
struct ud_toml_entry {
    const char *section; /* "" before the first header; points into the document's sections */
    char *key;
    int line;
    struct ud_toml_value value;
};

/* One `[name]` header, also when no key follows it. */
struct ud_toml_section {
    char *name;
    int line;
};

/* A parsed file, entries and sections in file order. Owned by the caller: ud_toml_free. */
struct ud_toml_doc {
    char *file; /* the name used in messages */
    struct ud_toml_entry *entries;
    size_t nentries;
    struct ud_toml_section *sections;
    size_t nsections;
};

/*
 * Parses len bytes of text (need not be NUL-terminated; a NUL byte is an error). file names the
 * source in messages ("n1.toml:7: ...").
 * Returns 0 and *out (transferred to the caller), UD_EINVAL with errmsg "file:line: what is wrong",
 * or UD_ENOMEM.
 */
int ud_toml_parse(const char *text, size_t len, const char *file, struct ud_toml_doc **out,
                  char *errmsg);

/* Reads path (at most UD_TOML_MAX_FILE bytes) and parses it. Additionally returns UD_ENOTFOUND
 * (no such file) and UD_EIO (unreadable, too large); errmsg names the path. */
int ud_toml_parse_file(const char *path, struct ud_toml_doc **out, char *errmsg);

void ud_toml_free(struct ud_toml_doc *doc); /* NULL allowed */

/* The entry for section/key, or NULL. Borrowed from doc. */
const struct ud_toml_entry *ud_toml_find(const struct ud_toml_doc *doc, const char *section,
                                         const char *key);

/* "string", "integer", "boolean", "array". */
const char *ud_toml_type_name(enum ud_toml_type type);

#endif
