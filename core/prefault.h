/*
 * A background thread that faults fresh anonymous memory in (MADV_POPULATE_WRITE) before a
 * writer reaches it, so that the kernel's page provisioning (faults, zeroing, memcg charge) runs
 * on another CPU instead of on the writer's thread. Used for the memtable arena's next block.
 *
 * One process-wide thread, started by the first ud_prefault_start() and joined by the matching
 * last ud_prefault_stop() (the engine's open and close). Without a running thread requests are
 * dropped and the writer faults its pages itself, as it would anyway when the thread is late.
 */
#ifndef UD_CORE_PREFAULT_H
#define UD_CORE_PREFAULT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Faults [addr, addr + len) in now, on the calling thread, with one madvise(MADV_POPULATE_WRITE)
 * instead of one page fault per page. Returns 0, or -1 when it did not (then the pages fault in
 * one by one when written: harmless). A kernel that does not know MADV_POPULATE_WRITE is noted
 * once: ud_populate_supported() then returns false and callers stop asking.
 */
int ud_populate(void *addr, size_t len);
bool ud_populate_supported(void);

/* Starts the thread (or counts one more user). Returns 0, or -1 when no thread could be created
 * (then nothing is counted and requests keep being dropped). */
int ud_prefault_start(void);
/* Drops a user; the last one stops and joins the thread and drops pending requests. */
void ud_prefault_stop(void);
/* Whether the thread runs (and populating works): without it a request would be dropped, so a
 * caller need not map memory ahead for it. */
bool ud_prefault_running(void);

/*
 * Asks for [addr, addr + len) to be populated. The range must stay mapped until the request is
 * done or ud_prefault_cancel(owner) returned. When done, *done_addr is set to addr (with release
 * order), so the owner can tell which of its requests completed. Returns 0 when queued, -1 when
 * dropped (no thread, or the queue is full): the caller then faults the memory itself.
 */
int ud_prefault_request(const void *owner, void *addr, size_t len, void *_Atomic *done_addr);

/* Drops owner's pending requests and waits for one in progress: afterwards nothing of owner's is
 * touched by the thread, so its ranges may be unmapped. */
void ud_prefault_cancel(const void *owner);

#endif
