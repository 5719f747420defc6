/* Which copy a relayer keeps: incarnations and deletes against the copy's (incarnation.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "relayer/incarnation.h"

static void test_stream(void **state)
{
    (void)state;
    assert_int_equal(ud_incarnation_vs_stream(7, 1, 7), UD_INCARNATION_SAME);
    /* An upstream that says nothing (an older version) is taken as the same. */
    assert_int_equal(ud_incarnation_vs_stream(7, 0, 0), UD_INCARNATION_SAME);
    assert_int_equal(ud_incarnation_vs_stream(0, 0, 0), UD_INCARNATION_SAME);
    /* Both from before incarnations. */
    assert_int_equal(ud_incarnation_vs_stream(0, 1, 0), UD_INCARNATION_SAME);
    /* An explicit 0 (created before raft or incarnations) against a stamped copy: an earlier
     * namespace of the name, not one to continue the copy with. */
    assert_int_equal(ud_incarnation_vs_stream(7, 1, 0), UD_INCARNATION_BEHIND);
    /* Re-created upstream: the copy goes. */
    assert_int_equal(ud_incarnation_vs_stream(7, 1, 9), UD_INCARNATION_NEWER);
    /* A copy from before incarnations against a stamped namespace: the first re-create after
     * an upgrade. */
    assert_int_equal(ud_incarnation_vs_stream(0, 1, 9), UD_INCARNATION_NEWER);
    /* A writer behind (it still has the deleted namespace): keep the good copy. */
    assert_int_equal(ud_incarnation_vs_stream(9, 1, 7), UD_INCARNATION_BEHIND);
}

static void test_deleted(void **state)
{
    (void)state;
    /* Deleted after the copy's create: the copy's namespace is gone. */
    assert_int_equal(ud_incarnation_vs_deleted(7, 8), UD_INCARNATION_NEWER);
    assert_int_equal(ud_incarnation_vs_deleted(0, 8), UD_INCARNATION_NEWER);
    /* A writer that applied the delete of an earlier namespace but not the copy's create. */
    assert_int_equal(ud_incarnation_vs_deleted(9, 8), UD_INCARNATION_BEHIND);
    /* An older writer's "deleted" without an index: dropped, as before. */
    assert_int_equal(ud_incarnation_vs_deleted(9, UD_DELETED_AT_UNKNOWN), UD_INCARNATION_NEWER);
}

static void test_copy_is_of(void **state)
{
    (void)state;
    /* An unstamped copy written after the create at 9: that namespace, stamped and kept. */
    assert_int_equal(ud_incarnation_copy_is_of(9, 12), 1);
    /* Entry 9 is the create itself; no record of the namespace carries it. */
    assert_int_equal(ud_incarnation_copy_is_of(9, 9), 0);
    /* Written before the create at 9: an earlier namespace of the name. */
    assert_int_equal(ud_incarnation_copy_is_of(9, 5), 0);
    /* No record retained (or all written before raft): nothing tells, the copy goes. */
    assert_int_equal(ud_incarnation_copy_is_of(9, 0), 0);
    assert_int_equal(ud_incarnation_copy_is_of(0, 12), 0);
}

static void test_copy_continues(void **state)
{
    (void)state;
    /* The same raft log: the record at the copy's next LSN comes after its newest (or in the same
     * entry): continued and stamped. */
    assert_int_equal(ud_incarnation_copy_continues(9, 12, 13), 1);
    assert_int_equal(ud_incarnation_copy_continues(9, 12, 12), 1);
    /* A cluster rebuilt from backups: created at 7 in a new log whose record at that LSN has a
     * smaller index than the old cluster's copy: another namespace, dropped. */
    assert_int_equal(ud_incarnation_copy_continues(7, 50000, 31), 0);
    assert_int_equal(ud_incarnation_copy_continues(7, 50000, 0), 0);
    /* Not newer than the create: dropped whatever follows. */
    assert_int_equal(ud_incarnation_copy_continues(9, 5, 13), 0);
    assert_int_equal(ud_incarnation_copy_continues(9, 0, 13), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_deleted),
        cmocka_unit_test(test_copy_is_of),
        cmocka_unit_test(test_copy_continues),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
