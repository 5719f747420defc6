/* libFuzzer target for the configuration parser: arbitrary bytes are refused with a file:line
 * message, or accepted into a document that is well formed and survives a round trip (printed back
 * as TOML and parsed again, it is the same document). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/toml.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_toml: check failed: %s (line %d)\n", #cond, __LINE__);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct out {
    char *data;
    size_t len;
    size_t cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        o->cap = (o->len + n + 1) * 2;
        o->data = realloc(o->data, o->cap);
        CHECK(o->data != NULL);
    }
    memcpy(o->data + o->len, s, n);
    o->len += n;
    o->data[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Prints a string as a basic string, escaping what must be escaped. */
static void put_string(struct out *o, const struct ud_toml_value *v)
{
    puts_(o, "\"");
    for (size_t i = 0; i < v->str_len; i++) {
        unsigned char c = (unsigned char)v->str[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(o, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            puts_(o, esc);
        } else {
            put(o, (const char *)&c, 1);
        }
    }
    puts_(o, "\"");
}

static void put_value(struct out *o, const struct ud_toml_value *v)
{
    char num[32];
    switch (v->type) {
    case UD_TOML_STRING:
        put_string(o, v);
        break;
    case UD_TOML_INTEGER:
        snprintf(num, sizeof num, "%lld", (long long)v->integer);
        puts_(o, num);
        break;
    case UD_TOML_BOOLEAN:
        puts_(o, v->boolean ? "true" : "false");
        break;
    case UD_TOML_ARRAY:
        puts_(o, "[");
        for (size_t i = 0; i < v->nitems; i++) {
            if (i > 0)
                puts_(o, ", ");
            put_value(o, &v->items[i]);
        }
        puts_(o, "]");
        break;
    }
}

static int same_value(const struct ud_toml_value *a, const struct ud_toml_value *b)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case UD_TOML_STRING:
        return a->str_len == b->str_len && memcmp(a->str, b->str, a->str_len) == 0;
    case UD_TOML_INTEGER:
        return a->integer == b->integer;
    case UD_TOML_BOOLEAN:
        return a->boolean == b->boolean;
    case UD_TOML_ARRAY:
        if (a->nitems != b->nitems || a->item_type != b->item_type)
            return 0;
        for (size_t i = 0; i < a->nitems; i++)
            if (!same_value(&a->items[i], &b->items[i]))
                return 0;
        return 1;
    }
    return 0;
}

static void check_value(const struct ud_toml_value *v, int max_line, int in_array)
{
    CHECK(v->line >= 1 && v->line <= max_line);
    switch (v->type) {
    case UD_TOML_STRING:
        CHECK(v->str != NULL);
        CHECK(strlen(v->str) == v->str_len);
        break;
    case UD_TOML_INTEGER:
    case UD_TOML_BOOLEAN:
        CHECK(!in_array || v->type == UD_TOML_INTEGER);
        CHECK(v->type != UD_TOML_BOOLEAN || v->boolean == 0 || v->boolean == 1);
        break;
    case UD_TOML_ARRAY:
        CHECK(!in_array);
        CHECK(v->item_type == UD_TOML_STRING || v->item_type == UD_TOML_INTEGER);
        for (size_t i = 0; i < v->nitems; i++) {
            CHECK(v->items[i].type == v->item_type);
            CHECK(v->items[i].line >= v->line);
            check_value(&v->items[i], max_line, 1);
        }
        break;
    }
}

/* Prints doc in a canonical form: root keys, then each section with its keys. */
static void print_doc(struct out *o, const struct ud_toml_doc *doc)
{
    for (size_t i = 0; i < doc->nentries; i++) {
        if (doc->entries[i].section[0] != '\0')
            continue;
        puts_(o, doc->entries[i].key);
        puts_(o, " = ");
        put_value(o, &doc->entries[i].value);
        puts_(o, "\n");
    }
    for (size_t s = 0; s < doc->nsections; s++) {
        puts_(o, "[");
        puts_(o, doc->sections[s].name);
        puts_(o, "]\n");
        for (size_t i = 0; i < doc->nentries; i++) {
            if (doc->entries[i].section != doc->sections[s].name)
                continue;
            puts_(o, doc->entries[i].key);
            puts_(o, " = ");
            put_value(o, &doc->entries[i].value);
            puts_(o, "\n");
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int max_line = 1;
    for (size_t i = 0; i < size; i++)
        max_line += data[i] == '\n';

    struct ud_toml_doc *doc = NULL;
    char errmsg[UD_ERRMSG_SIZE];
    memset(errmsg, 0, sizeof errmsg);
    int rc = ud_toml_parse((const char *)data, size, "fuzz.toml", &doc, errmsg);
    if (rc != 0) {
        CHECK(rc == UD_EINVAL);
        CHECK(doc == NULL);
        int line = 0;
        CHECK(sscanf(errmsg, "fuzz.toml:%d: ", &line) == 1);
        CHECK(line >= 1 && line <= max_line);
        CHECK(memchr(errmsg, '\0', sizeof errmsg) != NULL);
        return 0;
    }

    for (size_t s = 0; s < doc->nsections; s++) {
        CHECK(doc->sections[s].name[0] != '\0');
        CHECK(doc->sections[s].line >= 1 && doc->sections[s].line <= max_line);
    }
    for (size_t i = 0; i < doc->nentries; i++) {
        const struct ud_toml_entry *e = &doc->entries[i];
        CHECK(e->key[0] != '\0');
        CHECK(e->line >= 1 && e->line <= max_line);
        CHECK(e->value.line == e->line);
        check_value(&e->value, max_line, 0);
        CHECK(ud_toml_find(doc, e->section, e->key) == e);
        int known = e->section[0] == '\0';
        for (size_t s = 0; s < doc->nsections && !known; s++)
            known = e->section == doc->sections[s].name;
        CHECK(known);
    }

    struct out o = {0};
    puts_(&o, "");
    print_doc(&o, doc);
    struct ud_toml_doc *again = NULL;
    rc = ud_toml_parse(o.data, o.len, "again.toml", &again, errmsg);
    if (rc != 0)
        fprintf(stderr, "fuzz_toml: reprint refused: %s\n%s", errmsg, o.data);
    CHECK(rc == 0);
    CHECK(again->nentries == doc->nentries);
    CHECK(again->nsections == doc->nsections);
    for (size_t i = 0; i < doc->nentries; i++) {
        const struct ud_toml_entry *e = &doc->entries[i];
        const struct ud_toml_entry *f = ud_toml_find(again, e->section, e->key);
        CHECK(f != NULL);
        CHECK(same_value(&e->value, &f->value));
    }
    ud_toml_free(again);
    ud_toml_free(doc);
    free(o.data);
    return 0;
}
