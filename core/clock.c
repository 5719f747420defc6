/* Time sources. */
#include "core/clock.h"

#include <time.h>

static uint64_t read_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ud_now_ns(void)
{
    return read_clock(CLOCK_REALTIME);
}

uint64_t ud_mono_ns(void)
{
    return read_clock(CLOCK_MONOTONIC);
}

struct timespec ud_mono_deadline(uint64_t ms)
{
    uint64_t t = ud_mono_ns() + ms * 1000000ull;
    return (struct timespec){.tv_sec = (time_t)(t / 1000000000ull),
                             .tv_nsec = (long)(t % 1000000000ull)};
}
