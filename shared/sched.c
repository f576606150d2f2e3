/*
 * sched.c - Redis or the host's shared memory, backoff and fallback.
 */
#include "sched.h"

#include "headers.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

_Static_assert(CONFIG_NLIMITS == HDR_NLIMITS,
	       "config's and headers' limits are the same six");

#define REDIS_BACKOFF_MIN_NS (100 * 1000000LL)
#define REDIS_BACKOFF_MAX_NS (5000 * 1000000LL)
#define REDIS_LOG_EVERY_NS   (10000 * 1000000LL)

enum cp_err
sched_init(struct sched *s, const struct config *cfg, char *errbuf,
	   size_t errsz)
{
	char why[224];
	enum cp_err err;

	memset(s, 0, sizeof(*s));
	s->s_cfg = cfg;
	err = sched_redis_init(&s->s_redis, cfg);
	if (err) {
		snprintf(errbuf, errsz, "Redis scheduler: %s",
			 cp_strerror(err));
		return err;
	}
	err = sched_local_open(&s->s_local, cfg, why, sizeof(why));
	if (err && !cfg->redis_enabled) {
		snprintf(errbuf, errsz, "per-host scheduler unavailable: %s",
			 why);
		sched_redis_free(&s->s_redis);
		return err;
	}
	if (err)
		log_warnx("per-host fallback scheduler unavailable (%s): "
			  "requests get 503 while Redis is down",
			  why);
	return CP_OK;
}

void
sched_free(struct sched *s)
{
	sched_redis_free(&s->s_redis);
	sched_local_close(&s->s_local);
}

void
sched_warm(struct sched *s)
{
	char errbuf[160];

	/* A Redis that is down now is reported by the first request. */
	if (s->s_cfg->redis_enabled)
		(void)sched_redis_warm(&s->s_redis, errbuf, sizeof(errbuf));
}

/* Notes a failed Redis call: the next try waits, the log says it. */
static void
redis_failed(struct sched *s, int64_t now, const char *why)
{
	const struct config *cfg = s->s_cfg;

	s->s_backoff_ns = s->s_backoff_ns == 0 ? REDIS_BACKOFF_MIN_NS
			  : s->s_backoff_ns * 2 > REDIS_BACKOFF_MAX_NS
				  ? REDIS_BACKOFF_MAX_NS
				  : s->s_backoff_ns * 2;
	s->s_retry_ns = now + s->s_backoff_ns;
	snprintf(s->s_why, sizeof(s->s_why), "%s", why);
	if (s->s_quiet ||
	    (s->s_logged_ns != 0 && now - s->s_logged_ns < REDIS_LOG_EVERY_NS))
		return;
	s->s_logged_ns = now;
	log_warnx("Redis %s unavailable (%s): %s",
		  cfg->redis.ra_kind == REDIS_UNIX ? cfg->redis.ra_path
						   : cfg->redis.ra_host,
		  why,
		  cfg->redis_fallback && s->s_local.sl_state != NULL
			  ? "scheduling per host until it is back"
			  : "refusing chat requests until it is back");
}

enum cp_err
sched_reserve(struct sched *s, const struct sched_request *rq, struct slot *out)
{
	const struct config *cfg = s->s_cfg;
	struct clock_sample cs;
	char errbuf[256];
	int64_t now = mono_ns(), at;

	if (cfg->redis_enabled && now >= s->s_retry_ns) {
		if (sched_redis_reserve(&s->s_redis, rq, out, &cs, errbuf,
					sizeof(errbuf)) == CP_OK) {
			/* A poll's reply says nothing of Redis' clock. */
			if (cs.cs_redis_us <= 0)
				at = 0;
			else if (!sched_local_clock(&s->s_local, &cs,
						    out->s_at_us, &at,
						    &out->s_clock_us))
				at = clock_sync_local(&s->s_clock, &cs,
						      out->s_at_us,
						      &out->s_clock_us);
			out->s_deadline_ns = at * 1000;
			if (s->s_backoff_ns != 0)
				log_info("Redis is back: scheduling across "
					 "hosts again");
			s->s_backoff_ns = 0;
			return CP_OK;
		}
		redis_failed(s, now, errbuf);
	}
	if ((!cfg->redis_enabled || cfg->redis_fallback) &&
	    s->s_local.sl_state != NULL) {
		sched_local_reserve(&s->s_local, rq, out);
		return CP_OK;
	}
	return CP_ERR_REDIS;
}

/* Settles sl's charge where it was made; settle.lua's answer, or -1. */
static int
settle(struct sched *s, const struct slot *sl, const char *mode,
       const struct sched_outcome *o)
{
	char errbuf[256];
	int ran_out = -1;

	if (sl->s_local)
		return sched_local_settle(&s->s_local, sl, mode, o);
	if (sched_redis_settle(&s->s_redis, sl, mode, o, &ran_out, errbuf,
			       sizeof(errbuf)) != CP_OK)
		log_warnx("could not settle a request's budget in Redis: %s",
			  errbuf);
	return ran_out;
}

void
sched_retime(struct sched *s, struct slot *sl)
{
	int64_t at, err;

	if (sl->s_local || sl->s_key < 0)
		return;
	if (sched_local_clock_now(&s->s_local, sl->s_at_us, &at, &err) ||
	    clock_sync_translate(&s->s_clock, sl->s_at_us, &at, &err)) {
		sl->s_deadline_ns = at * 1000;
		sl->s_clock_us = err;
	}
}

void
sched_release(struct sched *s, const struct slot *sl)
{
	if (sl->s_key >= 0)
		(void)settle(s, sl, "release", NULL);
}

void
sched_rest(struct sched *s, int key, long ms, int disabled)
{
	char errbuf[128];

	sched_local_rest(&s->s_local, key, ms, disabled);
	if (s->s_cfg->redis_enabled && s->s_backoff_ns == 0 &&
	    sched_redis_rest(&s->s_redis, key, ms, disabled, errbuf,
			     sizeof(errbuf)) != CP_OK)
		log_warnx("could not record the key's rest in Redis: %s",
			  errbuf);
}

int
sched_settle(struct sched *s, const struct slot *sl,
	     const struct sched_outcome *o)
{
	const struct config *cfg = s->s_cfg;
	const char *fp = cfg->key_fps[sl->s_key];
	const char *model = sl->s_req->sr_model[0] ? sl->s_req->sr_model : "-";
	int ran_out;
	long ms;

	ran_out = settle(s, sl,
			 o->so_mode == SETTLE_USAGE	? "usage"
			 : o->so_mode == SETTLE_HEADERS ? "headers"
							: "answer",
			 o);
	if (o->so_mode == SETTLE_USAGE)
		return -1;
	if (o->so_status == 401 || o->so_status == 403) {
		ms = cfg->key_disable_ms;
		log_warnx("API key #%d (%s) was refused by the upstream (%ld): "
			  "disabled for %ld s; check or replace it",
			  sl->s_key, fp, o->so_status, ms / 1000);
		sched_rest(s, sl->s_key, ms, 1);
	} else if (o->so_status == 429 && ran_out >= 0 &&
		   ran_out < HDR_NLIMITS) {
		log_info("API key #%d (%s) rate limited (429) on model %s: its "
			 "organisation (%s) spent its %s budget; waiting for "
			 "it to refill",
			 sl->s_key, fp, model,
			 cfg->org_fps[cfg->key_org[sl->s_key]],
			 hdr_limit_names[ran_out]);
	} else if (o->so_status == 429) {
		ms = o->so_rest_ms > 0 ? o->so_rest_ms : cfg->key_cooldown_ms;
		log_info("API key #%d (%s) rate limited (429) on model %s, no "
			 "budget shown spent: its organisation (%s) rests %ld "
			 "ms for that model",
			 sl->s_key, fp, model,
			 cfg->org_fps[cfg->key_org[sl->s_key]], ms);
	}
	return o->so_status == 429 && ran_out >= 0 && ran_out < HDR_NLIMITS
		       ? ran_out
		       : -1;
}

const char *
slot_why_name(int why)
{
	if (why >= 0 && why < HDR_NLIMITS)
		return hdr_limit_names[why];
	switch (why) {
	case SLOT_WHY_SPACING: return "spacing";
	case SLOT_WHY_DISABLED: return "disabled-keys";
	case SLOT_WHY_REST: return "rest-after-429";
	case SLOT_WHY_PROBE: return "probe";
	case SLOT_WHY_CLIENT_RATE: return "client-rate";
	case SLOT_WHY_CLIENT_CONC: return "client-concurrency";
	default: return "-";
	}
}

/*
 * The seat may be held in Redis, on this host, or both (Redis failed
 * over between the request's reservations): given back in both. Not in
 * Redis while it is backed off from; that seat's lease ends it
 * (SCHED_SEAT_LEASE_MS).
 */
void
sched_client_done(struct sched *s, const struct sched_request *rq)
{
	char errbuf[256];

	if (rq->sr_client == NULL || rq->sr_client->sc_concurrent <= 0)
		return;
	if (s->s_local.sl_state != NULL)
		sched_local_client_done(&s->s_local, rq);
	if (s->s_cfg->redis_enabled && s->s_backoff_ns == 0 &&
	    sched_redis_client_done(&s->s_redis, rq, errbuf, sizeof(errbuf)) !=
		    CP_OK)
		log_warnx("could not give back a client's seat in Redis (its "
			  "lease ends it within %ld min): %s",
			  SCHED_SEAT_LEASE_MS / 60000, errbuf);
}

enum cp_err
sched_inspect(struct sched *s, struct sched_view *v)
{
	const struct config *cfg = s->s_cfg;
	char errbuf[256];
	int64_t now = mono_ns();
	int i;

	v->sv_from_redis = 0;
	v->sv_redis_up = 0;
	v->sv_fallback = 0;
	v->sv_depth_ms = 0;
	v->sv_nbudgets = 0;
	for (i = 0; i < v->sv_nkeys; i++) {
		memset(&v->sv_keys[i], 0, sizeof(v->sv_keys[i]));
		v->sv_keys[i].kv_requests = -1;
		v->sv_keys[i].kv_tokens = -1;
	}
	if (cfg->redis_enabled && now >= s->s_retry_ns) {
		if (sched_redis_inspect(&s->s_redis, v, errbuf,
					sizeof(errbuf)) == CP_OK) {
			if (s->s_backoff_ns != 0)
				log_info("Redis is back: scheduling across "
					 "hosts again");
			s->s_backoff_ns = 0;
			v->sv_from_redis = 1;
			v->sv_redis_up = 1;
			return CP_OK;
		}
		redis_failed(s, now, errbuf);
	}
	if ((!cfg->redis_enabled || cfg->redis_fallback) &&
	    s->s_local.sl_state != NULL) {
		sched_local_inspect(&s->s_local, v);
		v->sv_fallback = cfg->redis_enabled;
		return CP_OK;
	}
	return CP_ERR_REDIS;
}
