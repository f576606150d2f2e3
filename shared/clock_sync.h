/*
 * clock_sync.h - Redis' clock on this host's: a slot (Redis time) becomes
 * a local deadline.
 *
 * Each reply brackets Redis' "now" between the local send and receive
 * times of its request (a clock_sample). The estimate of the offset is
 * the midpoint of the tightest recent bracket, and is always kept inside
 * the latest one. Sending at "receipt + wait" instead would make every
 * delay in delivering the reply push that request late and squeeze the
 * gap to the next one. The estimate also carries a bound on how far it
 * may be off, which the request log shows (clock_ms). All-zero is the
 * valid "no estimate yet"; the host's workers share one estimate in
 * their shared state (sched_local_clock), so a fresh thread's first,
 * possibly wide, bracket on a busy machine does not decide its deadline.
 * Pure arithmetic: the caller serialises access.
 */
#ifndef CP_CLOCK_SYNC_H
#define CP_CLOCK_SYNC_H

#include <stdint.h>

/* What one reply says: Redis read cs_redis_us between the two. */
struct clock_sample {
	int64_t cs_sent_us; /* local CLOCK_MONOTONIC (us) */
	int64_t cs_recv_us;
	int64_t cs_redis_us; /* Redis' clock (us since 1970) */
};

struct clock_sync {
	int cs_valid;
	int64_t cs_offset_us; /* redis_us - local_us */
	int64_t cs_width_us;  /* width of the bracket it was taken from */
	int64_t cs_taken_us;  /* local time of that sample */
	int64_t cs_err_us;    /* how far it may be off, as of cs_err_at_us */
	int64_t cs_err_at_us;
};

/*
 * Folds sample s into cs. Returns the local time (us) of at_us (Redis
 * time); *err_us (if not NULL) how far that may be from the true one: the
 * estimate's bound, aged to at_us by the clocks' possible drift.
 */
int64_t clock_sync_local(struct clock_sync *cs, const struct clock_sample *s,
			 int64_t at_us, int64_t *err_us);

/*
 * Translates at_us by the estimate as it is (no new sample) into
 * *local_us and *err_us, as clock_sync_local does. Returns 0 (nothing
 * set) when there is no estimate yet.
 */
int clock_sync_translate(const struct clock_sync *cs, int64_t at_us,
			 int64_t *local_us, int64_t *err_us);

#endif
