/*
 * sched.h - the scheduler: which key a request goes out on, and when.
 *
 * One interface over two implementations: Redis (sched_redis.h), shared
 * by every worker on every host, and the host's own shared memory
 * (sched_local.h), used when Redis is out of reach and REDIS_FALLBACK=local
 * or when there is no Redis (REDIS_URL=none). This module picks between
 * them, backs off from a failing Redis (100 ms doubling to 5 s, so a Redis
 * that hangs does not cost every request REDIS_TIMEOUT_MS), and logs the
 * changes. A struct sched belongs to one worker thread.
 */
#ifndef CP_SCHED_H
#define CP_SCHED_H

#include "config.h"
#include "sched_local.h"
#include "sched_redis.h"
#include "slot.h"
#include "util.h"

#include <stdint.h>

struct sched {
	const struct config *s_cfg; /* borrowed */
	struct sched_redis s_redis;
	struct sched_local s_local; /* sl_state NULL: unavailable */
	int64_t s_retry_ns;	    /* no Redis attempt before this */
	int64_t s_backoff_ns;	    /* 0 while Redis answers */
	int64_t s_logged_ns;	    /* last "Redis unavailable" line */
};

/*
 * Sets s up: Redis connection state, and the per-host state mapped.
 * Without Redis the per-host state is required; with it, its absence is
 * logged (requests then get 503 while Redis is down). On failure s holds
 * nothing to free and errbuf says why.
 */
enum cp_err sched_init(struct sched *s, const struct config *cfg, char *errbuf,
		       size_t errsz);
void sched_free(struct sched *s);

/* A key's state, as the scheduler sees it (sched_inspect). */
enum sched_key_state {
	KEY_STATE_OK,	    /* usable now */
	KEY_STATE_RESTING,  /* after a 429: skipped until kv_until_ms */
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

/*
 * Fills v from Redis (one round trip, no write) when it answers, else
 * from the host's state. CP_ERR_REDIS when neither can be read (Redis
 * down under REDIS_FALLBACK=refuse): v then says only sv_redis_up 0.
 */
enum cp_err sched_inspect(struct sched *s, struct sched_view *v);

/* Connects to Redis and loads the script before the first request. */
void sched_warm(struct sched *s);

/*
 * Reserves a slot for rq, charging its organisation's budgets for
 * rq's model: from Redis, else (as configured) from the host's shared
 * state. CP_ERR_REDIS when neither can give one; CP_OK with s_key < 0
 * when nothing was reserved (SLOT_ALL_RESTING, SLOT_TOO_FAR, SLOT_POLL,
 * SLOT_CLIENT: s_wait_us says how long until one might be). rq must
 * outlive the slot. The client's limits (rq->sr_client) are checked first:
 * over one, SLOT_CLIENT with s_why SLOT_WHY_CLIENT_RATE or _CONC, nothing
 * booked or charged.
 */
enum cp_err sched_reserve(struct sched *s, const struct sched_request *rq,
			  struct slot *out);

/*
 * Gives back a slot that will not be used (its client left): the slot
 * is unbooked, the charge given back.
 */
void sched_release(struct sched *s, const struct slot *sl);

/*
 * Gives back rq's seat among its client's requests in flight (taken by
 * its first reservation or poll while rq->sr_client->sc_concurrent > 0):
 * called once per request, at its end, whatever happened. No-op when no
 * seat can be held.
 */
void sched_client_done(struct sched *s, const struct sched_request *rq);

/* Rests key for ms, on this host and (when Redis answers) on all. */
void sched_rest(struct sched *s, int key, long ms);

/*
 * Learns from the answer a slot's request got (one Redis round trip):
 * the budgets' levels from the x-ratelimit-* headers, allowing for the
 * requests still in flight; the charge settled with the real usage; a
 * 429 shows which budget ran out (whose level the headers corrected),
 * and one that shows none rests that organisation and model (as long as
 * the upstream said, else KEY_COOLDOWN_MS). A 401/403 disables the key
 * for KEY_DISABLE_MS. Logs these by key index and fingerprint.
 */
void sched_settle(struct sched *s, const struct slot *sl,
		  const struct sched_outcome *o);

#endif
