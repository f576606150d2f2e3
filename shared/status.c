/*
 * status.c - `cerebras-proxy status [--json]` (see status.h).
 */
#include "status.h"

#include "headers.h"
#include "log.h"
#include "sched.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *
state_name(enum sched_key_state st)
{
	switch (st) {
	case KEY_STATE_OK: return "ok";
	case KEY_STATE_RESTING: return "resting";
	case KEY_STATE_DISABLED: return "disabled";
	}
	return "-";
}

/* REDIS_FALLBACK as it applies: "none" without Redis. */
static const char *
fallback_mode(const struct config *cfg)
{
	if (!cfg->redis_enabled)
		return "none";
	return cfg->redis_fallback ? "local" : "refuse";
}

/* An ISO 8601 UTC time (second precision) of ms since 1970. */
static void
iso_time(int64_t ms, char *out, size_t outsz)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, outsz, "-");
}

static void
print_text(const struct config *cfg, const struct sched_view *v, int64_t now_ms,
	   FILE *fp)
{
	const struct sched_key_view *kv;
	const struct sched_budget_view *bv;
	char url[CONFIG_REDIS_STR_MAX];
	char until[64];
	char when[32];
	char req[24];
	char tok[24];
	char last[24];
	char model[sizeof(bv->bv_model) * 4];
	int usable = 0;
	int i;

	config_redis_str(cfg, url, sizeof(url));
	for (i = 0; i < v->sv_nkeys; i++)
		usable += v->sv_keys[i].kv_state == KEY_STATE_OK;
	fprintf(fp, "scheduler\n");
	fprintf(fp, "  source          %s\n",
		v->sv_from_redis ? "redis (shared by every host)"
				 : "host (this host's shared memory)");
	fprintf(fp, "  redis           %s (%s)\n", url,
		!cfg->redis_enabled ? "not configured"
		: v->sv_redis_up    ? "up"
				    : "unreachable");
	fprintf(fp, "  redis prefix    %s\n", cfg->redis_prefix);
	if (cfg->redis_enabled)
		fprintf(fp, "  fallback        %s (REDIS_FALLBACK=%s)\n",
			v->sv_fallback ? "active: scheduling per host"
				       : "inactive",
			fallback_mode(cfg));
	else
		fprintf(fp, "  fallback        none: per host only\n");
	fprintf(fp, "  timeline depth  %lld ms\n", (long long)v->sv_depth_ms);
	fprintf(fp,
		"\nkeys: %d, %d usable now (requests and tokens: today, UTC)\n",
		v->sv_nkeys, usable);
	fprintf(fp, "  %-4s %-11s %-12s %-9s %-34s %-5s %9s %12s\n", "key",
		"fingerprint", "organisation", "state", "until", "last",
		"requests", "tokens");
	for (i = 0; i < v->sv_nkeys; i++) {
		kv = &v->sv_keys[i];
		if (kv->kv_state == KEY_STATE_OK) {
			snprintf(until, sizeof(until), "-");
		} else {
			iso_time(now_ms + kv->kv_until_ms, when, sizeof(when));
			snprintf(until, sizeof(until), "%s (in %lld s)", when,
				 (long long)((kv->kv_until_ms + 999) / 1000));
		}
		fprintf(fp, "  #%-3d %-11s %-12s %-9s %-34s %-5s %9s %12s\n", i,
			cfg->key_fps[i], cfg->org_fps[cfg->key_org[i]],
			state_name(kv->kv_state), until,
			count_str(kv->kv_last_status > 0 ? kv->kv_last_status
							 : -1,
				  last, sizeof(last)),
			count_str(kv->kv_requests, req, sizeof(req)),
			count_str(kv->kv_tokens, tok, sizeof(tok)));
	}
	fprintf(fp, "\nbudgets (learned, per organisation and model): %d\n",
		v->sv_nbudgets);
	if (v->sv_nbudgets > 0)
		fprintf(fp, "  %-12s %-32s %-16s %14s %14s\n", "organisation",
			"model", "limit", "left", "cap");
	for (i = 0; i < v->sv_nbudgets; i++) {
		bv = &v->sv_budgets[i];
		fprintf(fp, "  %-12s %-32s %-16s %14lld %14lld\n",
			bv->bv_org >= 0 && bv->bv_org < cfg->norgs
				? cfg->org_fps[bv->bv_org]
				: "-",
			log_escape(bv->bv_model, model, sizeof(model)),
			bv->bv_limit >= 0 && bv->bv_limit < HDR_NLIMITS
				? hdr_limit_names[bv->bv_limit]
				: "-",
			bv->bv_level, bv->bv_cap);
	}
}

/* obj[name] = val (stolen, also on failure); 0, or -1. */
static int
set(json_t *obj, const char *name, json_t *val)
{
	return val == NULL || json_object_set_new(obj, name, val) != 0 ? -1 : 0;
}

/* A count, null if unknown (< 0). */
static json_t *
json_count(long long n)
{
	return n < 0 ? json_null() : json_integer(n);
}

static json_t *
json_key(const struct config *cfg, const struct sched_key_view *kv, int i,
	 int64_t now_ms)
{
	json_t *o = json_object();
	char when[32];
	int bad = 0;

	if (o == NULL)
		return NULL;
	bad |= set(o, "index", json_integer(i));
	bad |= set(o, "fingerprint", json_string(cfg->key_fps[i]));
	bad |= set(o, "organisation",
		   json_string(cfg->org_fps[cfg->key_org[i]]));
	bad |= set(o, "state", json_string(state_name(kv->kv_state)));
	if (kv->kv_state == KEY_STATE_OK) {
		bad |= set(o, "until", json_null());
		bad |= set(o, "until_ms", json_integer(0));
	} else {
		iso_time(now_ms + kv->kv_until_ms, when, sizeof(when));
		bad |= set(o, "until", json_string(when));
		bad |= set(o, "until_ms", json_integer(kv->kv_until_ms));
	}
	bad |= set(o, "last_status",
		   kv->kv_last_status > 0 ? json_integer(kv->kv_last_status)
					  : json_null());
	bad |= set(o, "requests_today", json_count(kv->kv_requests));
	bad |= set(o, "tokens_today", json_count(kv->kv_tokens));
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *
json_budget(const struct config *cfg, const struct sched_budget_view *bv)
{
	json_t *o = json_object();
	char model[sizeof(bv->bv_model) * 4];
	int bad = 0;

	if (o == NULL)
		return NULL;
	bad |= set(o, "organisation",
		   json_string(bv->bv_org >= 0 && bv->bv_org < cfg->norgs
				       ? cfg->org_fps[bv->bv_org]
				       : "-"));
	bad |= set(o, "model",
		   json_string(log_escape(bv->bv_model, model, sizeof(model))));
	bad |= set(o, "limit",
		   json_string(bv->bv_limit >= 0 && bv->bv_limit < HDR_NLIMITS
				       ? hdr_limit_names[bv->bv_limit]
				       : "-"));
	bad |= set(o, "left", json_integer(bv->bv_level));
	bad |= set(o, "cap", json_integer(bv->bv_cap));
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *
json_status(const struct config *cfg, const struct sched_view *v,
	    int64_t now_ms)
{
	json_t *root = json_object();
	json_t *sch = json_object();
	json_t *keys = json_array();
	json_t *budgets = json_array();
	char url[CONFIG_REDIS_STR_MAX];
	int bad =
		root == NULL || sch == NULL || keys == NULL || budgets == NULL;
	int i;

	config_redis_str(cfg, url, sizeof(url));
	for (i = 0; !bad && i < v->sv_nkeys; i++)
		bad = json_array_append_new(keys, json_key(cfg, &v->sv_keys[i],
							   i, now_ms)) != 0;
	for (i = 0; !bad && i < v->sv_nbudgets; i++)
		bad = json_array_append_new(
			      budgets, json_budget(cfg, &v->sv_budgets[i])) !=
		      0;
	if (!bad) {
		bad |= set(sch, "source",
			   json_string(v->sv_from_redis ? "redis" : "host"));
		bad |= set(sch, "redis_url", json_string(url));
		bad |= set(sch, "redis_prefix", json_string(cfg->redis_prefix));
		bad |= set(sch, "redis_up", json_boolean(v->sv_redis_up));
		bad |= set(sch, "fallback", json_string(fallback_mode(cfg)));
		bad |= set(sch, "fallback_active",
			   json_boolean(v->sv_fallback));
		bad |= set(sch, "timeline_depth_ms",
			   json_integer(v->sv_depth_ms));
		bad |= set(root, "scheduler", sch);
		sch = NULL;
		bad |= set(root, "keys", keys);
		keys = NULL;
		bad |= set(root, "budgets", budgets);
		budgets = NULL;
	}
	json_decref(sch);
	json_decref(keys);
	json_decref(budgets);
	if (bad) {
		json_decref(root);
		return NULL;
	}
	return root;
}

int
status_print(const struct config *cfg, const struct sched_view *v,
	     int64_t now_ms, int json, FILE *fp)
{
	json_t *root;
	int rc;

	if (!json) {
		print_text(cfg, v, now_ms, fp);
		return ferror(fp) ? -1 : 0;
	}
	root = json_status(cfg, v, now_ms);
	if (root == NULL)
		return -1;
	rc = json_dumpf(root, fp, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (rc != 0 || fputc('\n', fp) == EOF)
		return -1;
	return 0;
}

static void
status_usage(FILE *fp)
{
	fputs("usage: cerebras-proxy status [--json]\n"
	      "\n"
	      "Prints what the scheduler's shared state says (Redis, or this\n"
	      "host's without it): each key's state, last status and use\n"
	      "today, the learned budgets, the timeline's depth and the\n"
	      "fallback. Reads the configuration from the environment, as the\n"
	      "workers do; run it as their user. Exit status 1 when the state\n"
	      "cannot be read.\n",
	      fp);
}

/* Wall-clock ms since 1970. */
static int64_t
wall_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
status_main(int argc, char **argv)
{
	struct config cfg;
	struct sched s;
	struct sched_view *v = NULL;
	char err[512];
	int json = 0;
	int rc = 1;
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if (strcmp(argv[i], "--help") == 0 ||
			   strcmp(argv[i], "-h") == 0) {
			status_usage(stdout);
			return 0;
		} else {
			status_usage(stderr);
			return 2;
		}
	}
	if (config_load_env(&cfg, err, sizeof(err)) != CP_OK) {
		fprintf(stderr, "cerebras-proxy: %s\n", err);
		return 1;
	}
	if (sched_init(&s, &cfg, err, sizeof(err)) != CP_OK) {
		fprintf(stderr, "cerebras-proxy status: %s\n", err);
		config_free(&cfg);
		return 1;
	}
	s.s_quiet = 1;
	v = calloc(1, sizeof(*v));
	if (v != NULL)
		v->sv_keys = calloc((size_t)cfg.nkeys, sizeof(*v->sv_keys));
	if (v == NULL || v->sv_keys == NULL) {
		fprintf(stderr, "cerebras-proxy status: out of memory\n");
		goto done;
	}
	v->sv_nkeys = cfg.nkeys;
	if (sched_inspect(&s, v) != CP_OK) {
		config_redis_str(&cfg, err, sizeof(err));
		fprintf(stderr,
			"cerebras-proxy status: cannot read the scheduler's "
			"state: Redis %s unreachable (%s)%s\n",
			err, s.s_why[0] ? s.s_why : "not tried",
			cfg.redis_fallback
				? " and this host's state unavailable"
				: " and REDIS_FALLBACK=refuse");
		goto done;
	}
	if (status_print(&cfg, v, wall_ms(), json, stdout) != 0 ||
	    fflush(stdout) != 0) {
		fprintf(stderr, "cerebras-proxy status: writing the status "
				"failed\n");
		goto done;
	}
	rc = 0;
done:
	if (v != NULL)
		free(v->sv_keys);
	free(v);
	sched_free(&s);
	config_free(&cfg);
	return rc;
}
