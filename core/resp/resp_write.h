/*
 * The RESP write commands shared by the binaries (core/resp/resp_write.c): each validates its
 * arguments, reads what its reply counts (DEL's existing keys, HSET's new fields, HDEL's removed
 * fields) from the session's namespace, encodes the records and hands them to the context's
 * submit hook. A binary lists them in its command table (with the flags of writer/resp_write.c).
 */
#ifndef UD_CORE_RESP_RESP_WRITE_H
#define UD_CORE_RESP_RESP_WRITE_H

#include "core/resp/resp_cmd.h"

void ud_resp_cmd_set(struct ud_resp_call *c);   /* SET key value -> +OK */
void ud_resp_cmd_mset(struct ud_resp_call *c);  /* MSET k v [k v ...] -> +OK (one record) */
void ud_resp_cmd_del(struct ud_resp_call *c);   /* DEL/UNLINK key [key ...] -> :existing keys */
void ud_resp_cmd_hset(struct ud_resp_call *c);  /* HSET key f v [f v ...] -> :new fields */
void ud_resp_cmd_hmset(struct ud_resp_call *c); /* HMSET key f v [f v ...] -> +OK */
void ud_resp_cmd_hdel(struct ud_resp_call *c);  /* HDEL key f [f ...] -> :removed fields */

#endif
