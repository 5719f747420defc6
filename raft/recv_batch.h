/*
 * raft's incoming connections read with one read(2) per wake-up instead of one per message part.
 *
 * raft_uv 0.15 reads each message in exact-size reads (preamble, header, then a payload if the
 * message has one), and libuv reads once more to see EAGAIN: four read(2) calls for every
 * AppendEntries carrying entries (and InstallSnapshot) a follower receives, three for every result
 * the leader receives and every heartbeat, on the path of each write. ud_raft_recv_batch_attach
 * makes such a stream read into a 16 KiB staging buffer and hands raft's parts out of it, copied
 * into the buffers raft asks for, one after the other, in the same callback. A part of at least
 * 16 KiB (a large AppendEntries payload) is still read straight into raft's own buffer.
 */
#ifndef UD_RAFT_RECV_BATCH_H
#define UD_RAFT_RECV_BATCH_H

#include <uv.h>

/*
 * Called right after raft's accept callback has started reading stream (raft_uv 0.15 does so
 * synchronously and never stops reading an accepted stream until it closes it). Wraps the
 * stream's read callbacks; returns 1 if it did, 0 if the stream is not reading or reads with
 * callbacks other than the ones recorded first (then it is left as raft set it up).
 */
int ud_raft_recv_batch_attach(uv_stream_t *stream);

/* Process-wide counts since start, for tests. */
struct ud_raft_recv_batch_counts {
    unsigned long reads;        /* read(2) results into the staging buffer, handed out in parts */
    unsigned long parts;        /* parts copied out of them to raft */
    unsigned long split_parts;  /* of those, parts only partly filled (the rest came later) */
    unsigned long direct_parts; /* reads straight into raft's buffer (parts >= 16 KiB) */
    /* Staged bytes never handed to raft: its stream closed (a message did not decode, or raft is
     * closing it) or it had no buffer. Nonzero on a healthy stream means lost bytes. */
    unsigned long dropped_bytes;
    unsigned long read_errors; /* read errors other than EOF passed on to raft */
};
void ud_raft_recv_batch_counts(struct ud_raft_recv_batch_counts *c);

#endif
