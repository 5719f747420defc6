/* Time sources: wall-clock nanoseconds for segment headers, monotonic for waits and ages. */
#ifndef UD_CORE_CLOCK_H
#define UD_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t ud_now_ns(void);

/* Nanoseconds of CLOCK_MONOTONIC: for timeouts and durations, never persisted. */
uint64_t ud_mono_ns(void);

/* The CLOCK_MONOTONIC time ms milliseconds from now, for pthread_cond_timedwait on a condition
 * variable created with that clock. */
struct timespec ud_mono_deadline(uint64_t ms);

#endif
