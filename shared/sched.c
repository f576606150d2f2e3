/*
 * sched.c - the Redis side of scheduling: connection upkeep and the script.
 */
#include "sched.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

/*
 * KEYS[1] round-robin counter, KEYS[2] next free slot (us, Redis time).
 * ARGV[1] number of keys, ARGV[2] interval in microseconds (0 = none).
 * Returns {key index, wait us, slot us}. Times in integer microseconds
 * (~1.8e15) are exact in Lua's doubles (< 2^53).
 * TIME before writes is fine on Redis >= 5 (effects replication).
 */
const char sched_script[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
	"local n = tonumber(ARGV[1])\n"
	"local interval = tonumber(ARGV[2])\n"
	"local idx = (redis.call('INCR', KEYS[1]) - 1) % n\n"
	"local at = now\n"
	"if interval > 0 then\n"
	"  local v = redis.call('GET', KEYS[2])\n"
	"  if v then\n"
	"    local nxt = tonumber(v)\n"
	"    if nxt and nxt > at then at = nxt end\n"
	"  end\n"
	"  local ttl = math.floor((at + interval - now) / 1000) + 1000\n"
	"  redis.call('SET', KEYS[2], string.format('%d', at + interval),"
	" 'PX', ttl)\n"
	"end\n"
	"return {idx, at - now, at}\n";

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
sched_init(struct sched *s, const struct config *cfg)
{
	memset(s, 0, sizeof(*s));
	s->sc_cfg = cfg;
	s->sc_key_rr = join_key(cfg->redis_prefix, "rr");
	s->sc_key_slot = join_key(cfg->redis_prefix, "slot");
	if (s->sc_key_rr == NULL || s->sc_key_slot == NULL) {
		sched_free(s);
		return CP_ERR_NOMEM;
	}
	snprintf(s->sc_interval_us, sizeof(s->sc_interval_us), "%lld",
		 (long long)cfg->interval_ms * 1000);
	snprintf(s->sc_nkeys, sizeof(s->sc_nkeys), "%d", cfg->nkeys);
	return CP_OK;
}

static void
sched_disconnect(struct sched *s)
{
	if (s->sc_ctx != NULL)
		redisFree(s->sc_ctx);
	s->sc_ctx = NULL;
}

void
sched_free(struct sched *s)
{
	sched_disconnect(s);
	free(s->sc_key_rr);
	free(s->sc_key_slot);
	s->sc_key_rr = NULL;
	s->sc_key_slot = NULL;
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
sched_cmd(struct sched *s, int argc, const char **argv, char *errbuf,
	  size_t errsz)
{
	redisReply *r;

	r = redisCommandArgv(s->sc_ctx, argc, argv, NULL);
	if (r == NULL) {
		snprintf(errbuf, errsz, "%s",
			 s->sc_ctx->errstr[0] ? s->sc_ctx->errstr : "no reply");
		sched_disconnect(s);
	}
	return r;
}

static enum cp_err
sched_connect(struct sched *s, char *errbuf, size_t errsz)
{
	const struct redis_addr *a = &s->sc_cfg->redis;
	struct timeval tv;
	redisReply *r;
	char db[16];
	const char *argv[3];
	int argc;

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
		sched_disconnect(s);
		return CP_ERR_REDIS;
	}
	/* The connect timeout covers connect only; this covers commands. */
	if (redisSetTimeout(s->sc_ctx, tv) != REDIS_OK) {
		snprintf(errbuf, errsz, "setting timeout failed");
		sched_disconnect(s);
		return CP_ERR_REDIS;
	}
	if (a->ra_password != NULL) {
		argc = 0;
		argv[argc++] = "AUTH";
		if (a->ra_user != NULL)
			argv[argc++] = a->ra_user;
		argv[argc++] = a->ra_password;
		r = sched_cmd(s, argc, argv, errbuf, errsz);
		if (r == NULL)
			return CP_ERR_REDIS;
		if (r->type == REDIS_REPLY_ERROR) {
			/* The reply names no secret; it is safe to show. */
			snprintf(errbuf, errsz, "AUTH: %.200s", r->str);
			freeReplyObject(r);
			sched_disconnect(s);
			return CP_ERR_REDIS;
		}
		freeReplyObject(r);
	}
	if (a->ra_db != 0) {
		snprintf(db, sizeof(db), "%d", a->ra_db);
		argv[0] = "SELECT";
		argv[1] = db;
		r = sched_cmd(s, 2, argv, errbuf, errsz);
		if (r == NULL)
			return CP_ERR_REDIS;
		if (r->type == REDIS_REPLY_ERROR) {
			snprintf(errbuf, errsz, "SELECT: %.200s", r->str);
			freeReplyObject(r);
			sched_disconnect(s);
			return CP_ERR_REDIS;
		}
		freeReplyObject(r);
	}
	return CP_OK;
}

int
sched_decode(const redisReply *r, int nkeys, struct slot *out, char *errbuf,
	     size_t errsz)
{
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(errbuf, errsz, "script: %.200s", r->str);
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER ||
	    r->element[2]->type != REDIS_REPLY_INTEGER) {
		snprintf(errbuf, errsz, "script: unexpected reply shape");
		return -1;
	}
	if (r->element[0]->integer < 0 || r->element[0]->integer >= nkeys ||
	    r->element[1]->integer < 0) {
		snprintf(errbuf, errsz, "script: reply out of range");
		return -1;
	}
	out->s_key = (int)r->element[0]->integer;
	out->s_wait_us = r->element[1]->integer;
	out->s_at_us = r->element[2]->integer;
	return 0;
}

enum cp_err
sched_reserve(struct sched *s, struct slot *out, char *errbuf, size_t errsz)
{
	const char *argv[7];
	redisReply *r;
	enum cp_err err;
	int rc;
	int64_t sent_us;
	int64_t recv_us;

	if (s->sc_ctx == NULL) {
		err = sched_connect(s, errbuf, errsz);
		if (err)
			return err;
	}
	argv[1] = s->sc_sha;
	argv[2] = "2";
	argv[3] = s->sc_key_rr;
	argv[4] = s->sc_key_slot;
	argv[5] = s->sc_nkeys;
	argv[6] = s->sc_interval_us;
	r = NULL;
	sent_us = mono_ns() / 1000;
	if (s->sc_sha[0] != '\0') {
		argv[0] = "EVALSHA";
		r = sched_cmd(s, 7, argv, errbuf, errsz);
		if (r == NULL)
			return CP_ERR_REDIS;
		if (r->type == REDIS_REPLY_ERROR &&
		    strncmp(r->str, "NOSCRIPT", 8) == 0) {
			/* Redis restarted or SCRIPT FLUSH: send the text. */
			freeReplyObject(r);
			r = NULL;
		}
	}
	if (r == NULL) {
		argv[0] = "EVAL";
		argv[1] = sched_script;
		r = sched_cmd(s, 7, argv, errbuf, errsz);
		if (r == NULL)
			return CP_ERR_REDIS;
		if (s->sc_sha[0] == '\0' && r->type != REDIS_REPLY_ERROR) {
			/* EVAL cached it; learn its name for next time. */
			const char *load[3] = {"SCRIPT", "LOAD", sched_script};
			redisReply *sha = sched_cmd(s, 3, load, errbuf, errsz);

			if (sha != NULL && sha->type == REDIS_REPLY_STRING &&
			    sha->len == 40)
				memcpy(s->sc_sha, sha->str, 41);
			if (sha != NULL)
				freeReplyObject(sha);
			if (s->sc_ctx == NULL) {
				freeReplyObject(r);
				return CP_ERR_REDIS;
			}
		}
	}
	recv_us = mono_ns() / 1000;
	rc = sched_decode(r, s->sc_cfg->nkeys, out, errbuf, errsz);
	freeReplyObject(r);
	if (rc != 0)
		return CP_ERR_REDIS;
	out->s_deadline_ns =
		clock_sync_local(&s->sc_clock, sent_us, recv_us,
				 out->s_at_us - out->s_wait_us, out->s_at_us) *
		1000;
	return CP_OK;
}
