/*
 * slot.h - a reserved slot: which key a request goes out on, and when.
 *
 * Made by either scheduler (Redis, or the per-host one in shared memory)
 * and used by the request path; see sched.h.
 */
#ifndef CP_SLOT_H
#define CP_SLOT_H

#include <stdint.h>

#define SLOT_ALL_RESTING (-1) /* s_key: every key rests */
#define SLOT_TOO_FAR	 (-2) /* s_key: the wait would exceed the bound */

struct slot {
	int s_key;	       /* index into config.keys, or SLOT_* */
	int s_local;	       /* 1: from the per-host scheduler */
	int64_t s_wait_us;     /* slot - the scheduler's "now" */
	int64_t s_at_us;       /* the slot on the scheduler's clock (us) */
	int64_t s_deadline_ns; /* the slot on this host's CLOCK_MONOTONIC */
	int64_t s_late_us;     /* set by the caller: how late it really sent */
};

#endif
