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
#include "sched_view.h"
#include "slot.h"
#include "util.h"

#include <stdint.h>

struct sched {
	const struct config *s_cfg; /* borrowed */
	struct sched_redis s_redis;
	struct sched_local s_local; /* sl_state NULL: unavailable */
	struct clock_sync s_clock;  /* Redis' clock, if s_local's is not */
	int64_t s_retry_ns;	    /* no Redis attempt before this */
	int64_t s_backoff_ns;	    /* 0 while Redis answers */
	int64_t s_logged_ns;	    /* last "Redis unavailable" line */
	int s_quiet;		    /* 1: those lines are not logged */
	char s_why[256];	    /* why Redis last failed ("" if never) */
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

/*
 * Fills v from Redis (one round trip, no write; see sched_redis_inspect)
 * when it answers, else from the host's state. Redis is asked only when
 * the backoff allows (a failure backs off as a reservation's does).
 * CP_ERR_REDIS when neither can be read (Redis down under
 * REDIS_FALLBACK=refuse, or the host's state unavailable): v then says
 * only sv_redis_up 0, each key's counts unknown (-1).
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
 * Translates a slot from Redis again, by the host's estimate of Redis'
 * clock as it is now, which the host's other workers may have tightened
 * since the reservation: s_deadline_ns and s_clock_us. Takes no round
 * trip; a slot of the per-host scheduler (on the host's clock) is left
 * as it is.
 */
void sched_retime(struct sched *s, struct slot *sl);

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

/*
 * Rests key for ms, on this host and (when Redis answers) on all;
 * disabled: a disablement (after a 401/403), as sched_inspect shows it.
 */
void sched_rest(struct sched *s, int key, long ms, int disabled);

/*
 * Learns from the answer a slot's request got (one Redis round trip):
 * the budgets' levels from the x-ratelimit-* headers, allowing for the
 * requests still in flight; the charge settled with the real usage; a
 * 429 shows which budget ran out (whose level the headers corrected),
 * and one that shows none rests that organisation and model (as long as
 * the upstream said, else KEY_COOLDOWN_MS). A 401/403 disables the key
 * for KEY_DISABLE_MS. Logs these by key index and fingerprint. Returns
 * the limit a 429 ran out of (0..HDR_NLIMITS-1, hdr_limit_names order),
 * or -1: not a 429, none shown spent, a usage-only settlement, or the
 * settlement not made (Redis out of reach).
 */
int sched_settle(struct sched *s, const struct slot *sl,
		 const struct sched_outcome *o);

#endif
