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
 * The reservation: one atomic step on Redis' clock.
 * KEYS[1] round-robin position, KEYS[2] next free slot of the global
 * timeline, KEYS[3] hash of per-key state: c<i> = key i cools down until,
 * s<i> = key i's next free slot (key scope). Times: integer microseconds
 * of Redis time (~1.8e15, exact in Lua's doubles).
 * ARGV: number of keys, interval us, "1" for key scope, global floor us
 * (key scope), longest acceptable wait us.
 * Walks the keys from the round-robin position, skipping those cooling
 * down; global scope takes the first usable key, key scope the one whose
 * next slot is earliest (ties: round-robin order). Returns
 *   {key, wait, slot}   reserved (and the position moves past key);
 *   {-1, wait, until}   every key cools down; the first frees at until;
 *   {-2, wait, slot}    the slot is further away than allowed: nothing
 *                       reserved.
 * TIME before writes is fine on Redis >= 5 (effects replication).
 */
const char sched_script[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
	"local n = tonumber(ARGV[1])\n"
	"local iv = tonumber(ARGV[2])\n"
	"local perkey = ARGV[3] == '1'\n"
	"local gap = iv\n"
	"if perkey then gap = tonumber(ARGV[4]) end\n"
	"local maxw = tonumber(ARGV[5])\n"
	"local rr = tonumber(redis.call('GET', KEYS[1]) or '0') % n\n"
	"local f = {}\n"
	"for i = 0, n - 1 do f[#f + 1] = 'c' .. i; f[#f + 1] = 's' .. i end\n"
	"local v = redis.call('HMGET', KEYS[3], unpack(f))\n"
	"local g = 0\n"
	"if gap > 0 then g = tonumber(redis.call('GET', KEYS[2]) or '0') end\n"
	"local best, bat, free = -1, 0, -1\n"
	"for j = 0, n - 1 do\n"
	"  local i = (rr + j) % n\n"
	"  local c = tonumber(v[2 * i + 1] or '0')\n"
	"  if c > now then\n"
	"    if free < 0 or c < free then free = c end\n"
	"  else\n"
	"    local at = now\n"
	"    if g > at then at = g end\n"
	"    if perkey then\n"
	"      local ks = tonumber(v[2 * i + 2] or '0')\n"
	"      if ks > at then at = ks end\n"
	"    end\n"
	"    if best < 0 or at < bat then best, bat = i, at end\n"
	"    if not perkey then break end\n"
	"  end\n"
	"end\n"
	"if best < 0 then return {-1, free - now, free} end\n"
	"if bat - now > maxw then return {-2, bat - now, bat} end\n"
	"redis.call('SET', KEYS[1], best + 1)\n"
	"if gap > 0 then\n"
	"  redis.call('SET', KEYS[2], string.format('%d', bat + gap), 'PX',\n"
	"             math.floor((bat + gap - now) / 1000) + 1000)\n"
	"end\n"
	"if perkey and iv > 0 then\n"
	"  redis.call('HSET', KEYS[3], 's' .. best, string.format('%d', bat + "
	"iv))\n"
	"  if redis.call('PTTL', KEYS[3]) < 0 then\n"
	"    redis.call('PEXPIRE', KEYS[3], 86400000)\n"
	"  end\n"
	"end\n"
	"return {best, bat - now, bat}\n";

/*
 * Puts a key in cooldown: KEYS[1] the per-key hash, ARGV key index and
 * duration us. Only ever lengthens a cooldown. Returns the end, Redis time.
 */
const char sched_cool_script[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
	"local f = 'c' .. ARGV[1]\n"
	"local till = now + tonumber(ARGV[2])\n"
	"local cur = tonumber(redis.call('HGET', KEYS[1], f) or '0')\n"
	"if cur > till then till = cur end\n"
	"redis.call('HSET', KEYS[1], f, string.format('%d', till))\n"
	"local keep = math.floor((till - now) / 1000) + 86400000\n"
	"if redis.call('PTTL', KEYS[1]) < keep then\n"
	"  redis.call('PEXPIRE', KEYS[1], keep)\n"
	"end\n"
	"return till\n";

/*
 * Gives back a slot nobody will use (its client left while queued), when
 * that is still possible: only if it is the last one handed out on its
 * timeline, so no later reservation moves. KEYS as the reservation's;
 * ARGV key index, slot us, interval us, "1" for key scope, gap us of the
 * global timeline. Returns 1 if released, 0 otherwise.
 */
const char sched_release_script[] =
	"local at = tonumber(ARGV[2])\n"
	"local iv = tonumber(ARGV[3])\n"
	"local gap = tonumber(ARGV[5])\n"
	"local done = 0\n"
	"if ARGV[4] == '1' and iv > 0 then\n"
	"  local f = 's' .. ARGV[1]\n"
	"  if tonumber(redis.call('HGET', KEYS[3], f) or '0') == at + iv then\n"
	"    redis.call('HSET', KEYS[3], f, string.format('%d', at))\n"
	"    done = 1\n"
	"  end\n"
	"end\n"
	"if gap > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') == at + "
	"gap "
	"then\n"
	"  redis.call('SET', KEYS[2], string.format('%d', at), 'KEEPTTL')\n"
	"  done = 1\n"
	"end\n"
	"return done\n";

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
	s->sc_reserve.ss_text = sched_script;
	s->sc_cool.ss_text = sched_cool_script;
	s->sc_release.ss_text = sched_release_script;
	s->sc_key_rr = join_key(cfg->redis_prefix, "rr");
	s->sc_key_slot = join_key(cfg->redis_prefix, "slot");
	s->sc_key_state = join_key(cfg->redis_prefix, "keys");
	if (s->sc_key_rr == NULL || s->sc_key_slot == NULL ||
	    s->sc_key_state == NULL) {
		sched_free(s);
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

/* SCRIPT LOAD: caches sc in Redis and learns its SHA1. */
static enum cp_err
script_load(struct sched *s, struct sched_script_ref *sc, char *errbuf,
	    size_t errsz)
{
	const char *argv[3] = {"SCRIPT", "LOAD", sc->ss_text};
	redisReply *r = sched_cmd(s, 3, argv, errbuf, errsz);

	if (r == NULL)
		return CP_ERR_REDIS;
	if (r->type == REDIS_REPLY_STRING && r->len == 40)
		memcpy(sc->ss_sha, r->str, 41);
	freeReplyObject(r);
	return CP_OK;
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
	/*
	 * Learn the reservation script's SHA1 now, so each request costs one
	 * EVALSHA round trip and no more.
	 */
	if (s->sc_reserve.ss_sha[0] == '\0')
		return script_load(s, &s->sc_reserve, errbuf, errsz);
	return CP_OK;
}

enum cp_err
sched_warm(struct sched *s, char *errbuf, size_t errsz)
{
	if (s->sc_ctx != NULL)
		return CP_OK;
	return sched_connect(s, errbuf, errsz);
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
	if (r->element[0]->integer < SLOT_TOO_FAR ||
	    r->element[0]->integer >= nkeys || r->element[1]->integer < 0) {
		snprintf(errbuf, errsz, "script: reply out of range");
		return -1;
	}
	out->s_key = (int)r->element[0]->integer;
	out->s_wait_us = r->element[1]->integer;
	out->s_at_us = r->element[2]->integer;
	return 0;
}

/*
 * EVALSHA of a script, EVAL when Redis does not know it (after a restart
 * or SCRIPT FLUSH), learning its SHA1 from SCRIPT LOAD the first time.
 * Connects first if needed. Returns the reply (NULL, errbuf set, on a
 * connection failure).
 */
static redisReply *
sched_eval(struct sched *s, struct sched_script_ref *sc, int argc,
	   const char **argv, char *errbuf, size_t errsz)
{
	redisReply *r = NULL;

	if (s->sc_ctx == NULL && sched_connect(s, errbuf, errsz) != CP_OK)
		return NULL;
	if (sc->ss_sha[0] != '\0') {
		argv[0] = "EVALSHA";
		argv[1] = sc->ss_sha;
		r = sched_cmd(s, argc, argv, errbuf, errsz);
		if (r == NULL)
			return NULL;
		if (r->type != REDIS_REPLY_ERROR ||
		    strncmp(r->str, "NOSCRIPT", 8) != 0)
			return r;
		freeReplyObject(r);
	}
	argv[0] = "EVAL";
	argv[1] = sc->ss_text;
	r = sched_cmd(s, argc, argv, errbuf, errsz);
	if (r == NULL || r->type == REDIS_REPLY_ERROR || sc->ss_sha[0] != '\0')
		return r;
	/* EVAL cached it; learn its name for next time. */
	(void)script_load(s, sc, errbuf, errsz);
	return r;
}

enum cp_err
sched_reserve(struct sched *s, struct slot *out, char *errbuf, size_t errsz)
{
	const char *argv[11];
	redisReply *r;
	int rc;
	int64_t sent_us;
	int64_t recv_us;

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
	r = sched_eval(s, &s->sc_reserve, 11, argv, errbuf, errsz);
	if (r == NULL)
		return CP_ERR_REDIS;
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

/* sched_eval for scripts that answer an integer. */
static enum cp_err
sched_eval_int(struct sched *s, struct sched_script_ref *sc, int argc,
	       const char **argv, char *errbuf, size_t errsz)
{
	redisReply *r = sched_eval(s, sc, argc, argv, errbuf, errsz);
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
sched_cooldown(struct sched *s, int key, long ms, char *errbuf, size_t errsz)
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
	return sched_eval_int(s, &s->sc_cool, 6, argv, errbuf, errsz);
}

enum cp_err
sched_release(struct sched *s, const struct slot *sl, char *errbuf,
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
	return sched_eval_int(s, &s->sc_release, 11, argv, errbuf, errsz);
}
