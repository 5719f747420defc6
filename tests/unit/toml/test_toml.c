/* TOML subset tests: every accepted form decodes to the right value and line, and every refused
 * input fails with UD_EINVAL and a message that names file:line and says what is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/toml.h"
#include "tests/lib/testutil.h"

static struct ud_toml_doc *parse_ok(const char *text)
{
    struct ud_toml_doc *doc = NULL;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_toml_parse(text, strlen(text), "t.toml", &doc, errmsg);
    if (rc != 0)
        fail_msg("unexpected error %d: %s\n--- input:\n%s", rc, errmsg, text);
    assert_non_null(doc);
    return doc;
}

/* Parses text that must be refused; checks the message starts with "t.toml:<line>: " and contains
 * want. */
static void parse_bad_len(const char *text, size_t len, int line, const char *want)
{
    struct ud_toml_doc *doc = (struct ud_toml_doc *)0x1;
    char errmsg[UD_ERRMSG_SIZE] = "";
    int rc = ud_toml_parse(text, len, "t.toml", &doc, errmsg);
    if (rc != UD_EINVAL)
        fail_msg("expected UD_EINVAL, got %d (%s)\n--- input:\n%s", rc, errmsg, text);
    assert_null(doc);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "t.toml:%d: ", line);
    if (strncmp(errmsg, prefix, strlen(prefix)) != 0 || strstr(errmsg, want) == NULL)
        fail_msg("message \"%s\" lacks \"%s\" or \"%s\"\n--- input:\n%s", errmsg, prefix, want,
                 text);
}

static void parse_bad(const char *text, int line, const char *want)
{
    parse_bad_len(text, strlen(text), line, want);
}

static const struct ud_toml_value *get(const struct ud_toml_doc *doc, const char *section,
                                       const char *key)
{
    const struct ud_toml_entry *e = ud_toml_find(doc, section, key);
    if (e == NULL)
        fail_msg("[%s] %s missing", section, key);
    return &e->value;
}

static void test_document(void **state)
{
    (void)state;
    const char *text = "# a writer\n"
                       "top = 1\n"
                       "\n"
                       "[server]   # the process\n"
                       "data_dir = \"/var/lib/unison\"\n"
                       "  log_level='debug'  # indented, literal\n"
                       "[raft]\n"
                       "node_id = 3\n"
                       "peers = [\"1@127.0.0.1:4101\", \"2@127.0.0.1:4102\",\n"
                       "         # the third\n"
                       "         \"3@127.0.0.1:4103\",\n"
                       "]\n"
                       "enabled = true\n"
                       "off = false\n"
                       "[empty]\n"
                       "[ spaced ]\n"
                       "ports = [ 1, -2 ,3 ]\n"
                       "none = []\n";
    struct ud_toml_doc *doc = parse_ok(text);
    assert_int_equal(doc->nentries, 9);
    assert_int_equal(doc->nsections, 4);
    assert_string_equal(doc->sections[0].name, "server");
    assert_int_equal(doc->sections[0].line, 4);
    assert_string_equal(doc->sections[2].name, "empty");
    assert_int_equal(doc->sections[2].line, 15);
    assert_string_equal(doc->sections[3].name, "spaced");

    const struct ud_toml_value *v = get(doc, "", "top");
    assert_int_equal(v->type, UD_TOML_INTEGER);
    assert_int_equal(v->integer, 1);
    assert_int_equal(v->line, 2);

    v = get(doc, "server", "data_dir");
    assert_int_equal(v->type, UD_TOML_STRING);
    assert_string_equal(v->str, "/var/lib/unison");
    assert_int_equal(v->str_len, 15);
    assert_int_equal(v->line, 5);
    v = get(doc, "server", "log_level");
    assert_string_equal(v->str, "debug");
    assert_int_equal(v->line, 6);

    v = get(doc, "raft", "peers");
    assert_int_equal(v->type, UD_TOML_ARRAY);
    assert_int_equal(v->item_type, UD_TOML_STRING);
    assert_int_equal(v->nitems, 3);
    assert_int_equal(v->line, 9);
    assert_string_equal(v->items[0].str, "1@127.0.0.1:4101");
    assert_int_equal(v->items[1].line, 9);
    assert_string_equal(v->items[2].str, "3@127.0.0.1:4103");
    assert_int_equal(v->items[2].line, 11);

    v = get(doc, "raft", "enabled");
    assert_int_equal(v->type, UD_TOML_BOOLEAN);
    assert_int_equal(v->boolean, 1);
    assert_int_equal(get(doc, "raft", "off")->boolean, 0);

    v = get(doc, "spaced", "ports");
    assert_int_equal(v->item_type, UD_TOML_INTEGER);
    assert_int_equal(v->nitems, 3);
    assert_int_equal(v->items[1].integer, -2);
    v = get(doc, "spaced", "none");
    assert_int_equal(v->type, UD_TOML_ARRAY);
    assert_int_equal(v->nitems, 0);

    /* Entries name their section; a key of one section is not found in another. */
    assert_string_equal(ud_toml_find(doc, "raft", "node_id")->section, "raft");
    assert_null(ud_toml_find(doc, "server", "node_id"));
    assert_null(ud_toml_find(doc, "", "data_dir"));
    ud_toml_free(doc);
}

static void test_empty_and_blank(void **state)
{
    (void)state;
    const char *inputs[] = {"", "\n\n", "# only a comment", "   \t\n# x\n\r\n"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct ud_toml_doc *doc = parse_ok(inputs[i]);
        assert_int_equal(doc->nentries, 0);
        assert_int_equal(doc->nsections, 0);
        ud_toml_free(doc);
    }
    ud_toml_free(NULL);
}

static void test_crlf_and_bom(void **state)
{
    (void)state;
    struct ud_toml_doc *doc = parse_ok("\xef\xbb\xbf[a]\r\nx = \"1\"\r\n\r\ny = 2 # c\r\n");
    assert_string_equal(get(doc, "a", "x")->str, "1");
    assert_int_equal(get(doc, "a", "y")->line, 4);
    ud_toml_free(doc);
}

static void test_integers(void **state)
{
    (void)state;
    struct ud_toml_doc *doc = parse_ok("a = 0\nb = -0\nc = +17\nd = 1_000_000\n"
                                       "e = 9223372036854775807\nf = -9223372036854775808\n"
                                       "g = 9_223_372_036_854_775_807\n");
    assert_int_equal(get(doc, "", "a")->integer, 0);
    assert_int_equal(get(doc, "", "b")->integer, 0);
    assert_int_equal(get(doc, "", "c")->integer, 17);
    assert_int_equal(get(doc, "", "d")->integer, 1000000);
    assert_true(get(doc, "", "e")->integer == INT64_MAX);
    assert_true(get(doc, "", "f")->integer == INT64_MIN);
    assert_true(get(doc, "", "g")->integer == INT64_MAX);
    ud_toml_free(doc);

    parse_bad("a = 9223372036854775808\n", 1, "out of range");
    parse_bad("a = -9223372036854775809\n", 1, "out of range");
    parse_bad("a = 99999999999999999999999\n", 1, "out of range");
    parse_bad("a = 012\n", 1, "leading zeros");
    parse_bad("a = 0_1\n", 1, "leading zeros");
    parse_bad("a = 1__0\n", 1, "between two digits");
    parse_bad("a = 1_\n", 1, "between two digits");
    parse_bad("a = -_1\n", 1, "between two digits");
    parse_bad("a = 12abc\n", 1, "invalid integer");
    parse_bad("a = -\n", 1, "invalid integer");
    parse_bad("a = +\n", 1, "invalid integer");
    parse_bad("\n\na = 1.5\n", 3, "floats are not supported");
    parse_bad("a = 1e6\n", 1, "floats are not supported");
    parse_bad("a = inf\n", 1, "floats are not supported");
    parse_bad("a = -nan\n", 1, "floats are not supported");
    parse_bad("a = 0x1f\n", 1, "hexadecimal, octal and binary");
    parse_bad("a = 0o17\n", 1, "hexadecimal, octal and binary");
    parse_bad("a = 0b101\n", 1, "hexadecimal, octal and binary");
    parse_bad("a = 1979-05-27\n", 1, "dates and times");
    parse_bad("a = 07:32:00\n", 1, "dates and times");
}

static void test_strings(void **state)
{
    (void)state;
    struct ud_toml_doc *doc = parse_ok("a = \"q\\\" b\\\\ n\\n t\\t r\\r b\\b f\\f\"\n"
                                       "b = \"caf\\u00e9 \\U0001F600 \\u20AC\"\n"
                                       "c = 'C:\\path\\no escapes \"here\"'\n"
                                       "d = \"\"\n"
                                       "e = ''\n"
                                       "f = \"tab\tinside, utf-8 \xc3\xa9\"\n"
                                       "g = \"# not a comment\" # a comment\n");
    assert_string_equal(get(doc, "", "a")->str, "q\" b\\ n\n t\t r\r b\b f\f");
    assert_string_equal(get(doc, "", "b")->str, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac");
    assert_int_equal(get(doc, "", "b")->str_len, 14);
    assert_string_equal(get(doc, "", "c")->str, "C:\\path\\no escapes \"here\"");
    assert_string_equal(get(doc, "", "d")->str, "");
    assert_int_equal(get(doc, "", "d")->str_len, 0);
    assert_string_equal(get(doc, "", "e")->str, "");
    assert_string_equal(get(doc, "", "f")->str, "tab\tinside, utf-8 \xc3\xa9");
    assert_string_equal(get(doc, "", "g")->str, "# not a comment");
    ud_toml_free(doc);

    parse_bad("a = \"open\n", 1, "unterminated string");
    parse_bad("\na = 'open\n", 2, "unterminated string");
    parse_bad("a = \"open", 1, "unterminated string");
    parse_bad("a = \"x\\\"", 1, "unterminated string");
    parse_bad("a = \"bad \\q\"\n", 1, "invalid escape \\q");
    parse_bad("a = \"bad \\", 1, "backslash followed by end of file");
    parse_bad("a = \"\\u12\"\n", 1, "4 hexadecimal digits");
    parse_bad("a = \"\\U0001F6\"\n", 1, "8 hexadecimal digits");
    parse_bad("a = \"\\u0000\"\n", 1, "NUL");
    parse_bad("a = \"\\ud800\"\n", 1, "not a Unicode scalar value");
    parse_bad("a = \"\\U00110000\"\n", 1, "not a Unicode scalar value");
    parse_bad("a = \"bell\x07\"\n", 1, "control character (0x07)");
    parse_bad("a = 'del\x7f'\n", 1, "control character (0x7f)");
    parse_bad("a = \"cr\rx\"\n", 1, "control character (0x0d)");
    parse_bad("a = \"\"\"multi\"\"\"\n", 1, "multi-line strings are not supported");
    parse_bad("a = '''multi'''\n", 1, "multi-line strings are not supported");
    parse_bad("a = bare\n", 1, "strings need quotes");
}

static void test_trailing_garbage(void **state)
{
    (void)state;
    parse_bad("a = \"x\" y\n", 1, "unexpected 'y' after value");
    parse_bad("a = 1 2\n", 1, "unexpected '2' after value");
    parse_bad("a = true false\n", 1, "after value");
    parse_bad("a = truex\n", 1, "strings need quotes");
    parse_bad("[s] x\n", 1, "unexpected 'x' after section header");
    parse_bad("a = [1] ]\n", 1, "after value");
}

static void test_crlf_lone_cr(void **state)
{
    (void)state;
    struct ud_toml_doc *doc = parse_ok("a = 1\r\n");
    ud_toml_free(doc);
    parse_bad("a = 1\rb = 2\n", 1, "byte 0x0d after value");
    parse_bad("\r", 1, "byte 0x0d");
}

static void test_keys_and_sections(void **state)
{
    (void)state;
    parse_bad("a = 1\nb = 2\na = 3\n", 3, "duplicate key a (first at line 1)");
    parse_bad("[s]\na = 1\n\n[t]\n[s]\n", 5, "duplicate section [s] (first at line 1)");
    parse_bad("[s]\na = 1\n# x\na = 1\n", 4, "duplicate key a in [s] (first at line 2)");
    parse_bad("a.b = 1\n", 1, "dotted keys are not supported");
    parse_bad("\"a\" = 1\n", 1, "quoted keys are not supported");
    parse_bad("'a' = 1\n", 1, "quoted keys are not supported");
    parse_bad("[a.b]\n", 1, "dotted section names are not supported");
    parse_bad("[\"a\"]\n", 1, "quoted section names are not supported");
    parse_bad("[[a]]\n", 1, "arrays of tables");
    parse_bad("[]\n", 1, "expected a section name");
    parse_bad("[a\n", 1, "expected ']' after section name");
    parse_bad("[a", 1, "expected ']' after section name, found end of file");
    parse_bad("a\n", 1, "expected '=' after key a");
    parse_bad("a 1\n", 1, "expected '=' after key a, found '1'");
    parse_bad("a =\n", 1, "missing value for key a");
    parse_bad("a = # nothing\n", 1, "missing value for key a");
    parse_bad("a =", 1, "missing value for key a");
    parse_bad("= 1\n", 1, "expected a key or a [section], found '='");
    parse_bad("a = {x = 1}\n", 1, "inline tables are not supported");
    parse_bad("a = \x01\n", 1, "expected a value, found byte 0x01");

    /* The same key in two sections is two keys. */
    struct ud_toml_doc *doc = parse_ok("a = 0\n[s]\na = 1\n[t]\na = 2\n");
    assert_int_equal(get(doc, "", "a")->integer, 0);
    assert_int_equal(get(doc, "s", "a")->integer, 1);
    assert_int_equal(get(doc, "t", "a")->integer, 2);
    ud_toml_free(doc);
}

static void test_arrays(void **state)
{
    (void)state;
    struct ud_toml_doc *doc = parse_ok("a = [\n  1,\n  2, # two\n\n  3\n]\nb = [ 'x' ]\n");
    const struct ud_toml_value *v = get(doc, "", "a");
    assert_int_equal(v->nitems, 3);
    assert_int_equal(v->items[2].integer, 3);
    assert_int_equal(v->items[2].line, 5);
    assert_int_equal(get(doc, "", "b")->items[0].line, 7);
    ud_toml_free(doc);

    parse_bad("a = [1, \"x\"]\n", 1, "array mixes integers and strings");
    parse_bad("a = [\n\"x\",\n2]\n", 3, "array mixes strings and integers");
    parse_bad("a = [true]\n", 1, "only strings or integers");
    parse_bad("a = [[1]]\n", 1, "nested arrays are not supported");
    parse_bad("a = [1 2]\n", 1, "expected ',' or ']' in array, found '2'");
    parse_bad("a = [,]\n", 1, "expected a value, found ','");
    parse_bad("a = [1,,2]\n", 1, "expected a value, found ','");
    parse_bad("x = 1\na = [1,\n2,\n", 2, "unterminated array");
    parse_bad("a = [1", 1, "unterminated array");
    parse_bad("a = [\"x\n\"]\n", 1, "unterminated string");
    parse_bad("a = [1 # c\x01\n]\n", 1, "control character (0x01) in comment");
}

static void test_bytes(void **state)
{
    (void)state;
    parse_bad_len("a = 1\nb = \"x\0y\"\n", 15, 2, "NUL byte in file");
    parse_bad("a = \"\xff\"\n", 1, "invalid UTF-8 (byte 0xff)");
    parse_bad("\n# \xc3\n", 2, "invalid UTF-8");
    parse_bad("a = \"\xc0\xaf\"\n", 1, "invalid UTF-8");              /* overlong '/' */
    parse_bad("a = \"\xe0\x80\xaf\"\n", 1, "overlong");               /* overlong '/' */
    parse_bad("a = \"\xed\xa0\x80\"\n", 1, "invalid code point");     /* surrogate */
    parse_bad("a = \"\xf4\x90\x80\x80\"\n", 1, "invalid code point"); /* > U+10FFFF */
    parse_bad("# \xe2\x82", 1, "truncated");
    parse_bad("# bell \x07\n", 1, "control character (0x07) in comment");
    parse_bad("\x0c", 1, "found byte 0x0c");
}

static void test_limits(void **state)
{
    (void)state;
    /* Many keys: bounded, and the refusal names the line of the first key too many. */
    size_t cap = 5000 * 16;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t n = 0;
    for (int i = 0; i < 4097; i++)
        n += (size_t)snprintf(text + n, cap - n, "k%d = %d\n", i, i);
    parse_bad_len(text, n, 4097, "too many keys");

    n = 0;
    for (int i = 0; i < 513; i++)
        n += (size_t)snprintf(text + n, cap - n, "[s%d]\n", i);
    parse_bad_len(text, n, 513, "too many sections");
    free(text);

    struct ud_toml_doc *doc = NULL;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_toml_parse("", UD_TOML_MAX_FILE + 1, "big.toml", &doc, errmsg), UD_EINVAL);
    assert_non_null(strstr(errmsg, "big.toml: larger than"));
}

static void test_file(void **state)
{
    (void)state;
    char *dir = ud_test_tmpdir("toml");
    char path[1024];
    snprintf(path, sizeof path, "%s/w.toml", dir);

    struct ud_toml_doc *doc = NULL;
    char errmsg[UD_ERRMSG_SIZE];
    assert_int_equal(ud_toml_parse_file(path, &doc, errmsg), UD_ENOTFOUND);
    assert_non_null(strstr(errmsg, path));
    assert_null(doc);

    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[server]\nlog_level = \"warn\"\n\nbad\n", f);
    fclose(f);
    assert_int_equal(ud_toml_parse_file(path, &doc, errmsg), UD_EINVAL);
    char want[1100];
    snprintf(want, sizeof want, "%s:4: expected '=' after key bad, found end of line", path);
    assert_string_equal(errmsg, want);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("[server]\nlog_level = \"warn\"\n", f);
    fclose(f);
    assert_int_equal(ud_toml_parse_file(path, &doc, errmsg), 0);
    assert_string_equal(doc->file, path);
    assert_string_equal(get(doc, "server", "log_level")->str, "warn");
    ud_toml_free(doc);

    /* A directory is not a configuration file. */
    assert_int_equal(ud_toml_parse_file(dir, &doc, errmsg), UD_EIO);
    assert_non_null(strstr(errmsg, "not a regular file"));
    ud_test_rmtree(dir);
    free(dir);
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(ud_toml_type_name(UD_TOML_STRING), "string");
    assert_string_equal(ud_toml_type_name(UD_TOML_INTEGER), "integer");
    assert_string_equal(ud_toml_type_name(UD_TOML_BOOLEAN), "boolean");
    assert_string_equal(ud_toml_type_name(UD_TOML_ARRAY), "array");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_document),     cmocka_unit_test(test_empty_and_blank),
        cmocka_unit_test(test_crlf_and_bom), cmocka_unit_test(test_integers),
        cmocka_unit_test(test_strings),      cmocka_unit_test(test_trailing_garbage),
        cmocka_unit_test(test_crlf_lone_cr), cmocka_unit_test(test_keys_and_sections),
        cmocka_unit_test(test_arrays),       cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_limits),       cmocka_unit_test(test_file),
        cmocka_unit_test(test_type_names),
    };
    return cmocka_run_group_tests_name("toml", tests, NULL, NULL);
}
