/*
 * health.c - the readiness check (see health.h).
 */
#include "health.h"

#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
health_reason_name(enum health_reason why)
{
	switch (why) {
	case HEALTH_READY: return "ready";
	case HEALTH_REDIS_UNREACHABLE: return "redis_unreachable";
	case HEALTH_COOLING_DOWN: return "all_keys_cooling_down";
	case HEALTH_DISABLED: return "all_keys_disabled";
	}
	return "-";
}

enum health_reason
health_judge(enum cp_err err, const struct sched_view *v, int *usable,
	     int64_t *soonest_ms)
{
	int resting = 0;
	int i;

	*usable = 0;
	*soonest_ms = 0;
	if (err != CP_OK)
		return HEALTH_REDIS_UNREACHABLE;
	for (i = 0; i < v->sv_nkeys; i++) {
		if (v->sv_keys[i].kv_state == KEY_STATE_OK) {
			(*usable)++;
			continue;
		}
		if (v->sv_keys[i].kv_state == KEY_STATE_RESTING)
			resting++;
		if (*soonest_ms == 0 || v->sv_keys[i].kv_until_ms < *soonest_ms)
			*soonest_ms = v->sv_keys[i].kv_until_ms;
	}
	if (*usable > 0)
		return HEALTH_READY;
	return resting > 0 ? HEALTH_COOLING_DOWN : HEALTH_DISABLED;
}

/* The 503's message for why. */
static const char *
health_message(enum health_reason why, const struct config *cfg)
{
	switch (why) {
	case HEALTH_REDIS_UNREACHABLE:
		return cfg->redis_enabled && !cfg->redis_fallback
			       ? "Redis is unreachable and "
				 "REDIS_FALLBACK=refuse: "
				 "chat requests are refused until it is back"
			       : "the scheduler's state cannot be read (Redis "
				 "unreachable and the per-host state "
				 "unavailable)";
	case HEALTH_COOLING_DOWN:
		return "no API key can be used now: every one is resting after "
		       "a 429 (or disabled); see Retry-After";
	case HEALTH_DISABLED:
		return "no API key can be used now: every one was refused by "
		       "the upstream (401/403) and is disabled; check them";
	case HEALTH_READY: break;
	}
	return "ready";
}

void
health_ready(struct worker *w, const struct request_io *io, struct resp *r)
{
	const struct config *cfg = w->w_cfg;
	struct sched_view *v = calloc(1, sizeof(*v));
	struct sched_key_view *keys = calloc((size_t)cfg->nkeys, sizeof(*keys));
	enum health_reason why;
	enum cp_err err;
	char extra[96];
	char body[256];
	int64_t soonest_ms;
	int usable;
	int n;

	(void)io;
	if (v == NULL || keys == NULL) {
		resp_error(r, 500, "server_error", "out_of_memory",
			   "out of memory", "Cache-Control: no-store\r\n");
		goto done;
	}
	v->sv_nkeys = cfg->nkeys;
	v->sv_keys = keys;
	err = sched_inspect(&w->w_sched, v);
	why = health_judge(err, v, &usable, &soonest_ms);
	if (why != HEALTH_READY) {
		soonest_ms = (soonest_ms + 999) / 1000;
		snprintf(extra, sizeof(extra),
			 "Cache-Control: no-store\r\nRetry-After: %lld\r\n",
			 why == HEALTH_REDIS_UNREACHABLE || soonest_ms < 1
				 ? 1LL
				 : (long long)soonest_ms);
		resp_error(r, 503, "service_unavailable",
			   health_reason_name(why), health_message(why, cfg),
			   extra);
		goto done;
	}
	n = snprintf(body, sizeof(body),
		     "{\"status\":\"ready\",\"source\":\"%s\",\"fallback\":%s,"
		     "\"keys\":%d,\"keys_usable\":%d}\n",
		     v->sv_from_redis ? "redis" : "host",
		     v->sv_fallback ? "true" : "false", cfg->nkeys, usable);
	if (resp_begin(r, 200, "application/json",
		       "Cache-Control: no-store\r\n") == CP_OK &&
	    n > 0 && (size_t)n < sizeof(body))
		(void)resp_write(r, body, (size_t)n);
done:
	free(keys);
	free(v);
}
