/*
 * sched_view.h - what the scheduler's shared state says, as
 * sched_inspect() reads it (sched.h): each key's state and counters, the
 * learned budgets, the timeline's depth. Filled by sched_redis_inspect()
 * or sched_local_inspect(); read by /readyz (health.c), /metrics and the
 * status command (status.c).
 */
#ifndef CP_SCHED_VIEW_H
#define CP_SCHED_VIEW_H

#include <stdint.h>

/* A key's state, as the scheduler sees it (sched_inspect). */
enum sched_key_state {
	KEY_STATE_OK, /* usable now */
	/*
	 * its last answer was a 429 and the budget that ran out (its
	 * organisation's, for that model) is still short of a request; or
	 * it was rested: until kv_until_ms
	 */
	KEY_STATE_RESTING,
	KEY_STATE_DISABLED, /* after a 401/403: skipped until kv_until_ms */
};

struct sched_key_view {
	enum sched_key_state kv_state;
	int64_t kv_until_ms;   /* its rest or disablement ends in this many
				  ms; 0 when usable */
	long kv_last_status;   /* the last upstream status on it, 0 unknown */
	long long kv_requests; /* requests sent on it today (UTC), -1 unknown */
	long long kv_tokens;   /* tokens they used, -1 unknown */
};

/* One learned budget: an organisation's limit for a model. */
struct sched_budget_view {
	int bv_org;	    /* index into config.org_fps */
	char bv_model[128]; /* the model */
	int bv_limit;	    /* 0..5, hdr_limit_names order */
	long long bv_level; /* what is left of it now */
	long long bv_cap;   /* the limit */
};

#define SCHED_VIEW_BUDGETS 256

/*
 * What sched_inspect sees: for /readyz, /metrics and the status command.
 * sv_keys is the caller's, of sv_nkeys (config.nkeys) entries.
 */
struct sched_view {
	int sv_from_redis;   /* read from Redis (else the host's state) */
	int sv_redis_up;     /* Redis answered (0 also when not configured) */
	int sv_fallback;     /* requests are scheduled per host now */
	int64_t sv_depth_ms; /* the last booked slot is this far ahead */
	int sv_nkeys;
	struct sched_key_view *sv_keys;
	int sv_nbudgets;
	struct sched_budget_view sv_budgets[SCHED_VIEW_BUDGETS];
};

#endif
