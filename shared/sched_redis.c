/*
 * sched_redis.c - the Redis scheduler: connection upkeep and the scripts
 * (shared/lua/, compiled in by shared/lua/embed.sh).
 */
#include "sched_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

static char *
join_key(const char *prefix, const char *name)
{
	size_t n = strlen(prefix) + strlen(name) + 2;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s:%s", prefix, name);
	return p;
}

enum cp_err
sched_redis_init(struct sched_redis *s, const struct config *cfg)
{
	memset(s, 0, sizeof(*s));
	s->sc_cfg = cfg;
	s->sc_reserve.ss_text = sched_lua_reserve;
	s->sc_rest.ss_text = sched_lua_rest;
	s->sc_release.ss_text = sched_lua_release;
	s->sc_key_rr = join_key(cfg->redis_prefix, "rr");
	s->sc_key_slot = join_key(cfg->redis_prefix, "slot");
	s->sc_key_state = join_key(cfg->redis_prefix, "keys");
	if (s->sc_key_rr == NULL || s->sc_key_slot == NULL ||
	    s->sc_key_state == NULL) {
		sched_redis_free(s);
		return CP_ERR_NOMEM;
	}
	snprintf(s->sc_interval_us, sizeof(s->sc_interval_us), "%lld",
		 (long long)cfg->interval_ms * 1000);
	snprintf(s->sc_nkeys, sizeof(s->sc_nkeys), "%d", cfg->nkeys);
	snprintf(s->sc_floor_us, sizeof(s->sc_floor_us), "%lld",
		 (long long)cfg->global_interval_ms * 1000);
	snprintf(s->sc_max_wait_us, sizeof(s->sc_max_wait_us), "%lld",
		 (long long)cfg->queue_max_wait_ms * 1000);
	return CP_OK;
}

static void
sched_redis_disconnect(struct sched_redis *s)
{
	if (s->sc_ctx != NULL)
		redisFree(s->sc_ctx);
	s->sc_ctx = NULL;
}

void
sched_redis_free(struct sched_redis *s)
{
	sched_redis_disconnect(s);
	free(s->sc_key_rr);
	free(s->sc_key_slot);
	free(s->sc_key_state);
	s->sc_key_rr = NULL;
	s->sc_key_slot = NULL;
	s->sc_key_state = NULL;
}

/* Monotonic clocks of two hosts drift apart by far less than this. */
#define CLOCK_DRIFT_PPM 1000

int64_t
clock_sync_local(struct clock_sync *cs, int64_t sent_us, int64_t recv_us,
		 int64_t redis_now_us, int64_t at_us)
{
	int64_t lo = redis_now_us - recv_us; /* offset bounds of this sample */
	int64_t hi = redis_now_us - sent_us;
	int64_t width = hi - lo;
	int64_t aged;

	if (cs->cs_valid) {
		/* An old estimate grows less certain as the clocks drift. */
		aged = cs->cs_width_us +
		       (recv_us - cs->cs_taken_us) * CLOCK_DRIFT_PPM / 1000000;
		if (width < aged)
			cs->cs_valid = 0;
	}
	if (!cs->cs_valid) {
		cs->cs_valid = 1;
		cs->cs_offset_us = lo + width / 2;
		cs->cs_width_us = width;
		cs->cs_taken_us = recv_us;
	} else if (cs->cs_offset_us < lo) {
		cs->cs_offset_us = lo;
	} else if (cs->cs_offset_us > hi) {
		cs->cs_offset_us = hi;
	}
	return at_us - cs->cs_offset_us;
}

/* Runs one command; returns its reply or NULL with errbuf set. */
static redisReply *
sched_redis_cmd(struct sched_redis *s, int argc, const char **argv,
		char *errbuf, size_t errsz)
{
	redisReply *r;

	r = redisCommandArgv(s->sc_ctx, argc, argv, NULL);
	if (r == NULL) {
		snprintf(errbuf, errsz, "%s",
			 s->sc_ctx->errstr[0] ? s->sc_ctx->errstr : "no reply");
		sched_redis_disconnect(s);
	}
	return r;
}

/* SCRIPT LOAD: caches sc in Redis and learns its SHA1. */
static enum cp_err
script_load(struct sched_redis *s, struct sched_redis_script *sc, char *errbuf,
	    size_t errsz)
{
	const char *argv[3] = {"SCRIPT", "LOAD", sc->ss_text};
	redisReply *r = sched_redis_cmd(s, 3, argv, errbuf, errsz);

	if (r == NULL)
		return CP_ERR_REDIS;
	if (r->type == REDIS_REPLY_STRING && r->len == 40)
		memcpy(sc->ss_sha, r->str, 41);
	freeReplyObject(r);
	return CP_OK;
}

/*
 * A set-up command (AUTH, SELECT) on a fresh connection; an error reply
 * drops the connection. Error replies name no secret: safe to show.
 */
static enum cp_err
sched_redis_setup(struct sched_redis *s, int argc, const char **argv,
		  char *errbuf, size_t errsz)
{
	redisReply *r = sched_redis_cmd(s, argc, argv, errbuf, errsz);

	if (r == NULL)
		return CP_ERR_REDIS;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(errbuf, errsz, "%s: %.200s", argv[0], r->str);
		freeReplyObject(r);
		sched_redis_disconnect(s);
		return CP_ERR_REDIS;
	}
	freeReplyObject(r);
	return CP_OK;
}

static enum cp_err
sched_redis_connect(struct sched_redis *s, char *errbuf, size_t errsz)
{
	const struct redis_addr *a = &s->sc_cfg->redis;
	struct timeval tv;
	char db[16];
	const char *argv[3];
	int argc;
	enum cp_err err;

	tv.tv_sec = s->sc_cfg->redis_timeout_ms / 1000;
	tv.tv_usec = (s->sc_cfg->redis_timeout_ms % 1000) * 1000;
	if (a->ra_kind == REDIS_UNIX)
		s->sc_ctx = redisConnectUnixWithTimeout(a->ra_path, tv);
	else
		s->sc_ctx = redisConnectWithTimeout(a->ra_host, a->ra_port, tv);
	if (s->sc_ctx == NULL) {
		snprintf(errbuf, errsz, "out of memory");
		return CP_ERR_REDIS;
	}
	if (s->sc_ctx->err) {
		snprintf(errbuf, errsz, "connect: %s", s->sc_ctx->errstr);
		sched_redis_disconnect(s);
		return CP_ERR_REDIS;
	}
	/* The connect timeout covers connect only; this covers commands. */
	if (redisSetTimeout(s->sc_ctx, tv) != REDIS_OK) {
		snprintf(errbuf, errsz, "setting timeout failed");
		sched_redis_disconnect(s);
		return CP_ERR_REDIS;
	}
	if (a->ra_password != NULL) {
		argc = 0;
		argv[argc++] = "AUTH";
		if (a->ra_user != NULL)
			argv[argc++] = a->ra_user;
		argv[argc++] = a->ra_password;
		err = sched_redis_setup(s, argc, argv, errbuf, errsz);
		if (err)
			return err;
	}
	if (a->ra_db != 0) {
		snprintf(db, sizeof(db), "%d", a->ra_db);
		argv[0] = "SELECT";
		argv[1] = db;
		err = sched_redis_setup(s, 2, argv, errbuf, errsz);
		if (err)
			return err;
	}
	/*
	 * Learn the reservation script's SHA1 now, so each request costs one
	 * EVALSHA round trip and no more.
	 */
	if (s->sc_reserve.ss_sha[0] == '\0')
		return script_load(s, &s->sc_reserve, errbuf, errsz);
	return CP_OK;
}

enum cp_err
sched_redis_warm(struct sched_redis *s, char *errbuf, size_t errsz)
{
	if (s->sc_ctx != NULL)
		return CP_OK;
	return sched_redis_connect(s, errbuf, errsz);
}

enum cp_err
sched_redis_decode(const redisReply *r, int nkeys, struct slot *out,
		   char *errbuf, size_t errsz)
{
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(errbuf, errsz, "script: %.200s", r->str);
		return CP_ERR_REDIS;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    r->element[2]->type != REDIS_REPLY_INTEGER) {
		snprintf(errbuf, errsz, "script: unexpected reply shape");
		return CP_ERR_REDIS;
	}
	if (r->element[0]->integer < SLOT_TOO_FAR ||
	    r->element[0]->integer >= nkeys || r->element[1]->integer < 0) {
		snprintf(errbuf, errsz, "script: reply out of range");
		return CP_ERR_REDIS;
	}
	out->s_key = (int)r->element[0]->integer;
	out->s_wait_us = r->element[1]->integer;
	out->s_at_us = r->element[2]->integer;
	return CP_OK;
}

/*
 * EVALSHA of a script, EVAL when Redis does not know it (after a restart
 * or SCRIPT FLUSH), learning its SHA1 from SCRIPT LOAD the first time.
 * Connects first if needed. Returns the reply (NULL, errbuf set, on a
 * connection failure).
 */
static redisReply *
sched_redis_eval(struct sched_redis *s, struct sched_redis_script *sc, int argc,
		 const char **argv, char *errbuf, size_t errsz)
{
	redisReply *r = NULL;

	if (s->sc_ctx == NULL && sched_redis_connect(s, errbuf, errsz) != CP_OK)
		return NULL;
	if (sc->ss_sha[0] != '\0') {
		argv[0] = "EVALSHA";
		argv[1] = sc->ss_sha;
		r = sched_redis_cmd(s, argc, argv, errbuf, errsz);
		if (r == NULL)
			return NULL;
		if (r->type != REDIS_REPLY_ERROR ||
		    strncmp(r->str, "NOSCRIPT", 8) != 0)
			return r;
		freeReplyObject(r);
	}
	argv[0] = "EVAL";
	argv[1] = sc->ss_text;
	r = sched_redis_cmd(s, argc, argv, errbuf, errsz);
	if (r == NULL || r->type == REDIS_REPLY_ERROR || sc->ss_sha[0] != '\0')
		return r;
	/* EVAL cached it; learn its name for next time. */
	(void)script_load(s, sc, errbuf, errsz);
	return r;
}

enum cp_err
sched_redis_reserve(struct sched_redis *s, struct slot *out, char *errbuf,
		    size_t errsz)
{
	const char *argv[11];
	redisReply *r;
	enum cp_err err;
	int64_t sent_us;
	int64_t recv_us;

	memset(out, 0, sizeof(*out));
	argv[2] = "3";
	argv[3] = s->sc_key_rr;
	argv[4] = s->sc_key_slot;
	argv[5] = s->sc_key_state;
	argv[6] = s->sc_nkeys;
	argv[7] = s->sc_interval_us;
	argv[8] = s->sc_cfg->scope_per_key ? "1" : "0";
	argv[9] = s->sc_floor_us;
	argv[10] = s->sc_max_wait_us;
	sent_us = mono_ns() / 1000;
	r = sched_redis_eval(s, &s->sc_reserve, 11, argv, errbuf, errsz);
	if (r == NULL)
		return CP_ERR_REDIS;
	recv_us = mono_ns() / 1000;
	err = sched_redis_decode(r, s->sc_cfg->nkeys, out, errbuf, errsz);
	freeReplyObject(r);
	if (err)
		return err;
	out->s_deadline_ns =
		clock_sync_local(&s->sc_clock, sent_us, recv_us,
				 out->s_at_us - out->s_wait_us, out->s_at_us) *
		1000;
	return CP_OK;
}

/* sched_redis_eval for scripts that answer an integer. */
static enum cp_err
sched_redis_eval_int(struct sched_redis *s, struct sched_redis_script *sc,
		     int argc, const char **argv, char *errbuf, size_t errsz)
{
	redisReply *r = sched_redis_eval(s, sc, argc, argv, errbuf, errsz);
	enum cp_err err;

	if (r == NULL)
		return CP_ERR_REDIS;
	err = r->type == REDIS_REPLY_INTEGER ? CP_OK : CP_ERR_REDIS;
	if (err)
		snprintf(errbuf, errsz, "script: %.200s",
			 r->type == REDIS_REPLY_ERROR ? r->str
						      : "unexpected reply");
	freeReplyObject(r);
	return err;
}

enum cp_err
sched_redis_rest(struct sched_redis *s, int key, long ms, char *errbuf,
		 size_t errsz)
{
	const char *argv[6];
	char idx[16];
	char us[32];

	snprintf(idx, sizeof(idx), "%d", key);
	snprintf(us, sizeof(us), "%lld", (long long)ms * 1000);
	argv[2] = "1";
	argv[3] = s->sc_key_state;
	argv[4] = idx;
	argv[5] = us;
	return sched_redis_eval_int(s, &s->sc_rest, 6, argv, errbuf, errsz);
}

enum cp_err
sched_redis_release(struct sched_redis *s, const struct slot *sl, char *errbuf,
		    size_t errsz)
{
	const struct config *c = s->sc_cfg;
	const char *argv[11];
	char idx[16];
	char at[32];
	char gap[32];

	snprintf(idx, sizeof(idx), "%d", sl->s_key);
	snprintf(at, sizeof(at), "%lld", (long long)sl->s_at_us);
	snprintf(gap, sizeof(gap), "%lld",
		 (long long)(c->scope_per_key ? c->global_interval_ms
					      : c->interval_ms) *
			 1000);
	argv[2] = "3";
	argv[3] = s->sc_key_rr;
	argv[4] = s->sc_key_slot;
	argv[5] = s->sc_key_state;
	argv[6] = idx;
	argv[7] = at;
	argv[8] = s->sc_interval_us;
	argv[9] = c->scope_per_key ? "1" : "0";
	argv[10] = gap;
	return sched_redis_eval_int(s, &s->sc_release, 11, argv, errbuf, errsz);
}
