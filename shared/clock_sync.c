/*
 * clock_sync.c - the offset between Redis' clock and this host's.
 */
#include "clock_sync.h"

#include <stddef.h>

/*
 * Monotonic clocks of two hosts drift apart by far less than this (NTP
 * slews a clock by 500 ppm at most).
 */
#define CLOCK_DRIFT_PPM 1000

/* What drift can do in d us (d < 0 counts as 0). */
static int64_t
clock_drift(int64_t d)
{
	return d > 0 ? d * CLOCK_DRIFT_PPM / 1000000 : 0;
}

int
clock_sync_translate(const struct clock_sync *cs, int64_t at_us,
		     int64_t *local_us, int64_t *err_us)
{
	if (!cs->cs_valid)
		return 0;
	*local_us = at_us - cs->cs_offset_us;
	*err_us = cs->cs_err_us + clock_drift(*local_us - cs->cs_err_at_us);
	return 1;
}

int64_t
clock_sync_local(struct clock_sync *cs, const struct clock_sample *s,
		 int64_t at_us, int64_t *err_us)
{
	int64_t lo = s->cs_redis_us - s->cs_recv_us; /* offset bounds */
	int64_t hi = s->cs_redis_us - s->cs_sent_us;
	int64_t width = hi - lo;
	int64_t aged, moved = 0, local, err;

	if (cs->cs_valid) {
		/* An old estimate grows less certain as the clocks drift. */
		aged = cs->cs_width_us +
		       clock_drift(s->cs_recv_us - cs->cs_taken_us);
		if (width < aged)
			cs->cs_valid = 0;
	}
	if (!cs->cs_valid) {
		cs->cs_valid = 1;
		cs->cs_offset_us = lo + width / 2;
		cs->cs_width_us = width;
		cs->cs_taken_us = s->cs_recv_us;
		cs->cs_err_us = width - width / 2;
	} else {
		if (cs->cs_offset_us < lo)
			moved = lo - cs->cs_offset_us, cs->cs_offset_us = lo;
		else if (cs->cs_offset_us > hi)
			moved = cs->cs_offset_us - hi, cs->cs_offset_us = hi;
		/*
		 * The true offset is inside this bracket and so is the
		 * estimate now: they differ by its width at most. Moved
		 * further than its bound allowed, the clocks stepped: that
		 * width is all that is known.
		 */
		cs->cs_err_us += clock_drift(s->cs_recv_us - cs->cs_err_at_us);
		if (moved > cs->cs_err_us || cs->cs_err_us > width)
			cs->cs_err_us = width;
	}
	cs->cs_err_at_us = s->cs_recv_us;
	(void)clock_sync_translate(cs, at_us, &local, &err);
	if (err_us != NULL)
		*err_us = err;
	return local;
}
