/*
 * How far raft's log writes reach into their segments (see write_reach.h).
 */
#include "raft/write_reach.h"

#include <pthread.h>

/* Segments remembered besides the current one: enough to ride out one short segment (a snapshot
 * soon after a burst). raft prepares segments two ahead, so a segment is sized by the writes of
 * segments two to four before it: a burst's first three segments keep the threshold's estimate,
 * and a lighter load after a burst pays for the heavier one's zeros for four to five segments. */
#define HISTORY 2

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_offset; /* where the previous write started */
static uint64_t current;     /* the furthest end written in the current segment */
static uint64_t history[HISTORY];

void ud_raft_write_reach_note(uint64_t offset, uint64_t len)
{
    pthread_mutex_lock(&mu);
    if (offset < last_offset) {
        for (int i = HISTORY - 1; i > 0; i--)
            history[i] = history[i - 1];
        history[0] = current;
        current = 0;
    }
    last_offset = offset;
    if (offset + len > current)
        current = offset + len;
    pthread_mutex_unlock(&mu);
}

uint64_t ud_raft_write_reach(void)
{
    pthread_mutex_lock(&mu);
    uint64_t reach = current;
    for (int i = 0; i < HISTORY; i++)
        if (history[i] > reach)
            reach = history[i];
    pthread_mutex_unlock(&mu);
    return reach;
}
