/*
 * sched_redis.c - the Redis scheduler: connection upkeep and the scripts
 * (shared/lua/, compiled in by shared/lua/embed.sh).
 */
#include "sched_redis.h"

#include "headers.h"

#include <openssl/evp.h>
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

/*
 * The SHA1 Redis knows a script by, computed here: no SCRIPT LOAD round
 * trip for any connection; Redis learns the script from the first EVAL
 * that follows a NOSCRIPT (once per Redis restart or SCRIPT FLUSH).
 */
static enum cp_err
script_sha(struct sched_redis_script *sc)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	unsigned int i;

	if (EVP_Digest(sc->ss_text, strlen(sc->ss_text), md, &mdlen, EVP_sha1(),
		       NULL) != 1 ||
	    mdlen != 20)
		return CP_ERR_NOMEM;
	for (i = 0; i < mdlen; i++)
		snprintf(sc->ss_sha + 2 * i, 3, "%02x", md[i]);
	return CP_OK;
}

enum cp_err
sched_redis_init(struct sched_redis *s, const struct config *cfg)
{
	size_t mapsz = (size_t)cfg->nkeys * 4 + 1;
	int i;
	int o;

	memset(s, 0, sizeof(*s));
	s->sc_cfg = cfg;
	s->sc_reserve.ss_text = sched_lua_reserve;
	s->sc_rest.ss_text = sched_lua_rest;
	s->sc_settle.ss_text = sched_lua_settle;
	if (script_sha(&s->sc_reserve) != CP_OK ||
	    script_sha(&s->sc_rest) != CP_OK ||
	    script_sha(&s->sc_settle) != CP_OK) {
		sched_redis_free(s);
		return CP_ERR_NOMEM;
	}
	s->sc_key_rr = join_key(cfg->redis_prefix, "rr");
	s->sc_key_slot = join_key(cfg->redis_prefix, "slot");
	s->sc_key_state = join_key(cfg->redis_prefix, "keys");
	s->sc_key_kslot = join_key(cfg->redis_prefix, "kslot");
	s->sc_key_budget = calloc((size_t)cfg->norgs, sizeof(char *));
	/* EVALSHA, sha, numkeys, 4 + norgs + 2 keys, 16 arguments */
	s->sc_argv = calloc((size_t)cfg->norgs + 32, sizeof(char *));
	s->sc_orgmap = malloc(mapsz);
	/* <prefix>:cf:<client id, at most SCHED_CLIENT_ID_MAX bytes> */
	s->sc_client_sz =
		strlen(cfg->redis_prefix) + 4 + SCHED_CLIENT_ID_MAX + 1;
	s->sc_key_client = malloc(s->sc_client_sz);
	s->sc_key_seats = malloc(s->sc_client_sz);
	if (s->sc_key_rr == NULL || s->sc_key_slot == NULL ||
	    s->sc_key_state == NULL || s->sc_key_kslot == NULL ||
	    s->sc_key_budget == NULL || s->sc_argv == NULL ||
	    s->sc_orgmap == NULL || s->sc_key_client == NULL ||
	    s->sc_key_seats == NULL) {
		sched_redis_free(s);
		return CP_ERR_NOMEM;
	}
	/* <prefix>:b:<org fingerprint>:<model, at most 255 bytes> */
	s->sc_budget_sz = strlen(cfg->redis_prefix) + 4 + 8 + 1 + 256;
	for (o = 0; o < cfg->norgs; o++) {
		s->sc_key_budget[o] = malloc(s->sc_budget_sz);
		if (s->sc_key_budget[o] == NULL) {
			sched_redis_free(s);
			return CP_ERR_NOMEM;
		}
	}
	s->sc_orgmap[0] = '\0';
	for (i = 0; i < cfg->nkeys; i++)
		snprintf(s->sc_orgmap + strlen(s->sc_orgmap),
			 mapsz - strlen(s->sc_orgmap), "%s%d", i ? "," : "",
			 cfg->key_org[i]);
	/* A probe holds its budget at most as long as its answer may take. */
	snprintf(s->sc_probe_us, sizeof(s->sc_probe_us), "%lld",
		 (long long)(cfg->connect_timeout_ms +
			     cfg->first_byte_timeout_ms + 1000) *
			 1000);
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
	int o;

	sched_redis_disconnect(s);
	free(s->sc_key_rr);
	free(s->sc_key_slot);
	free(s->sc_key_state);
	free(s->sc_key_kslot);
	if (s->sc_key_budget != NULL)
		for (o = 0; o < s->sc_cfg->norgs; o++)
			free(s->sc_key_budget[o]);
	free(s->sc_key_budget);
	free(s->sc_argv);
	free(s->sc_orgmap);
	free(s->sc_key_client);
	free(s->sc_key_seats);
	s->sc_key_rr = NULL;
	s->sc_key_slot = NULL;
	s->sc_key_state = NULL;
	s->sc_key_kslot = NULL;
	s->sc_key_budget = NULL;
	s->sc_argv = NULL;
	s->sc_orgmap = NULL;
	s->sc_key_client = NULL;
	s->sc_key_seats = NULL;
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
	return CP_OK;
}

enum cp_err
sched_redis_warm(struct sched_redis *s, char *errbuf, size_t errsz)
{
	if (s->sc_ctx != NULL)
		return CP_OK;
	return sched_redis_connect(s, errbuf, errsz);
}

static int
reply_ints(const redisReply *r, size_t from, size_t to)
{
	size_t i;

	for (i = from; i < to; i++)
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			return 0;
	return 1;
}

enum cp_err
sched_redis_decode(const redisReply *r, int nkeys, struct slot *out,
		   char *errbuf, size_t errsz)
{
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(errbuf, errsz, "script: %.200s", r->str);
		return CP_ERR_REDIS;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 4 ||
	    !reply_ints(r, 0, 4) ||
	    (r->element[0]->integer >= 0 &&
	     (r->elements != 9 || !reply_ints(r, 4, 9)))) {
		snprintf(errbuf, errsz, "script: unexpected reply shape");
		return CP_ERR_REDIS;
	}
	/* Why 10 and 11 (the client's limits) come with SLOT_CLIENT only. */
	if (r->element[0]->integer < SLOT_CLIENT ||
	    r->element[0]->integer >= nkeys || r->element[1]->integer < 0 ||
	    (r->element[0]->integer == SLOT_CLIENT
		     ? r->element[3]->integer != SLOT_WHY_CLIENT_RATE &&
			       r->element[3]->integer != SLOT_WHY_CLIENT_CONC
		     : r->element[3]->integer < SLOT_WHY_NONE ||
			       r->element[3]->integer > SLOT_WHY_PROBE)) {
		snprintf(errbuf, errsz, "script: reply out of range");
		return CP_ERR_REDIS;
	}
	out->s_key = (int)r->element[0]->integer;
	out->s_wait_us = r->element[1]->integer;
	out->s_at_us = r->element[2]->integer;
	out->s_why = (int)r->element[3]->integer;
	if (out->s_key >= 0) {
		out->s_probe = r->element[4]->integer != 0;
		out->s_cq = r->element[5]->integer;
		out->s_ct = r->element[6]->integer;
		out->s_rt = r->element[7]->integer;
		out->s_first = r->element[8]->integer != 0;
	}
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
	return sched_redis_cmd(s, argc, argv, errbuf, errsz);
}

/* Fills (and returns) organisation o's budget hash name for model. */
static const char *
budget_key(struct sched_redis *s, int o, const char *model)
{
	snprintf(s->sc_key_budget[o], s->sc_budget_sz, "%s:b:%s:%.255s",
		 s->sc_cfg->redis_prefix, s->sc_cfg->org_fps[o],
		 model[0] ? model : "-");
	return s->sc_key_budget[o];
}

/* The declared limits for model, as settle.lua and reserve.lua take them. */
static void
declared_str(const struct config *cfg, const char *model, char *out,
	     size_t outsz)
{
	long long d[CONFIG_NLIMITS];

	config_declared(cfg, model, d);
	snprintf(out, outsz, "%lld,%lld,%lld,%lld,%lld,%lld", d[0], d[1], d[2],
		 d[3], d[4], d[5]);
}

/*
 * Takes r, a command's reply that must be an integer: its value in *out
 * (if out is given), else CP_ERR_REDIS with what and the reason in
 * errbuf. Frees r; a NULL r (no reply) is CP_ERR_REDIS.
 */
static enum cp_err
int_reply(redisReply *r, const char *what, long long *out, char *errbuf,
	  size_t errsz)
{
	enum cp_err err = CP_OK;

	if (r == NULL)
		return CP_ERR_REDIS;
	if (r->type != REDIS_REPLY_INTEGER) {
		snprintf(errbuf, errsz, "%s: %.200s", what,
			 r->type == REDIS_REPLY_ERROR ? r->str
						      : "unexpected reply");
		err = CP_ERR_REDIS;
	} else if (out != NULL)
		*out = r->integer;
	freeReplyObject(r);
	return err;
}

/*
 * Fills the client's two key names (reserve.lua's last KEYS) for rq;
 * 0 if rq has no client limit to keep (the script is called without).
 */
static int
client_keys(struct sched_redis *s, const struct sched_request *rq)
{
	const struct sched_client *c = rq->sr_client;
	const char *id;

	if (!sched_client_limited(c))
		return 0;
	id = c->sc_id != NULL ? c->sc_id : "";
	snprintf(s->sc_key_client, s->sc_client_sz, "%s:c:%.*s",
		 s->sc_cfg->redis_prefix, SCHED_CLIENT_ID_MAX, id);
	snprintf(s->sc_key_seats, s->sc_client_sz, "%s:cf:%.*s",
		 s->sc_cfg->redis_prefix, SCHED_CLIENT_ID_MAX, id);
	return 1;
}

enum cp_err
sched_redis_reserve(struct sched_redis *s, const struct sched_request *rq,
		    struct slot *out, char *errbuf, size_t errsz)
{
	const struct config *cfg = s->sc_cfg;
	const struct sched_client *c = rq->sr_client;
	const char **argv = s->sc_argv;
	char nkeys_arg[16];
	char tokens[32];
	char declared[160];
	char rate[32], window[32], conc[32], seat[17], attempt[16], lease[32];
	redisReply *r;
	enum cp_err err;
	int64_t sent_us;
	int64_t recv_us;
	int client = client_keys(s, rq);
	int argc = 2;
	int o;

	memset(out, 0, sizeof(*out));
	out->s_req = rq;
	snprintf(nkeys_arg, sizeof(nkeys_arg), "%d",
		 4 + cfg->norgs + (client ? 2 : 0));
	snprintf(tokens, sizeof(tokens), "%lld", rq->sr_tokens);
	declared_str(cfg, rq->sr_model, declared, sizeof(declared));
	argv[argc++] = nkeys_arg;
	argv[argc++] = s->sc_key_rr;
	argv[argc++] = s->sc_key_slot;
	argv[argc++] = s->sc_key_state;
	argv[argc++] = s->sc_key_kslot;
	for (o = 0; o < cfg->norgs; o++)
		argv[argc++] = budget_key(s, o, rq->sr_model);
	if (client) {
		argv[argc++] = s->sc_key_client;
		argv[argc++] = s->sc_key_seats;
	}
	argv[argc++] = s->sc_nkeys;
	argv[argc++] = s->sc_interval_us;
	argv[argc++] = cfg->scope_per_key ? "1" : "0";
	argv[argc++] = s->sc_floor_us;
	argv[argc++] = s->sc_max_wait_us;
	argv[argc++] = s->sc_orgmap;
	argv[argc++] = tokens;
	argv[argc++] = declared;
	argv[argc++] = s->sc_probe_us;
	argv[argc++] = SCHED_POLL_US;
	if (client) {
		snprintf(rate, sizeof(rate), "%ld",
			 c->sc_window_ms > 0 && c->sc_rate > 0 ? c->sc_rate
							       : 0L);
		snprintf(window, sizeof(window), "%lld",
			 (long long)c->sc_window_ms * 1000);
		snprintf(conc, sizeof(conc), "%ld",
			 c->sc_concurrent > 0 ? c->sc_concurrent : 0L);
		snprintf(seat, sizeof(seat), "%.16s", rq->sr_seat);
		snprintf(attempt, sizeof(attempt), "%d", rq->sr_attempt);
		snprintf(lease, sizeof(lease), "%lld",
			 (long long)SCHED_SEAT_LEASE_MS * 1000);
		argv[argc++] = rate;
		argv[argc++] = window;
		argv[argc++] = conc;
		argv[argc++] = seat;
		argv[argc++] = attempt;
		argv[argc++] = lease;
	}
	sent_us = mono_ns() / 1000;
	r = sched_redis_eval(s, &s->sc_reserve, argc, argv, errbuf, errsz);
	if (r == NULL)
		return CP_ERR_REDIS;
	recv_us = mono_ns() / 1000;
	err = sched_redis_decode(r, cfg->nkeys, out, errbuf, errsz);
	freeReplyObject(r);
	if (err)
		return err;
	out->s_deadline_ns =
		clock_sync_local(&s->sc_clock, sent_us, recv_us,
				 out->s_at_us - out->s_wait_us, out->s_at_us) *
		1000;
	return CP_OK;
}

enum cp_err
sched_redis_client_done(struct sched_redis *s, const struct sched_request *rq,
			char *errbuf, size_t errsz)
{
	const char *argv[3];
	char seat[17];

	if (!client_keys(s, rq) || rq->sr_client->sc_concurrent <= 0)
		return CP_OK;
	if (s->sc_ctx == NULL && sched_redis_connect(s, errbuf, errsz) != CP_OK)
		return CP_ERR_REDIS;
	snprintf(seat, sizeof(seat), "%.16s", rq->sr_seat);
	argv[0] = "ZREM";
	argv[1] = s->sc_key_seats;
	argv[2] = seat;
	return int_reply(sched_redis_cmd(s, 3, argv, errbuf, errsz), "ZREM",
			 NULL, errbuf, errsz);
}

/* sched_redis_eval for scripts that answer an integer. */
static enum cp_err
sched_redis_eval_int(struct sched_redis *s, struct sched_redis_script *sc,
		     int argc, const char **argv, char *errbuf, size_t errsz)
{
	return int_reply(sched_redis_eval(s, sc, argc, argv, errbuf, errsz),
			 "script", NULL, errbuf, errsz);
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

/* The answer's limits as settle.lua takes them, or "-" if none. */
static void
limits_str(const struct hdr_limit *l, char *out, size_t outsz)
{
	size_t len = 0;
	int any = 0;
	int i;

	if (l != NULL) {
		for (i = 0; i < HDR_NLIMITS; i++) {
			any |= l[i].hl_known;
			len += (size_t)snprintf(
				out + len, outsz - len, "%s%lld,%lld",
				i ? "," : "",
				l[i].hl_known ? l[i].hl_limit : -1,
				l[i].hl_known ? l[i].hl_remaining : -1);
			if (len >= outsz)
				break;
		}
	}
	if (!any)
		snprintf(out, outsz, "-");
}

enum cp_err
sched_redis_settle(struct sched_redis *s, const struct slot *sl,
		   const char *mode, const struct sched_outcome *o,
		   int *ran_out, char *errbuf, size_t errsz)
{
	const struct config *cfg = s->sc_cfg;
	const char *argv[21];
	char idx[16], at[32], tokens[32], declared[160], cq[32], ct[32], rt[32],
		status[16], limits[320], used[32], age[32], rest[32];
	int64_t age_ns = 0;
	long long v = -1;
	enum cp_err err;

	*ran_out = -1;
	snprintf(idx, sizeof(idx), "%d", sl->s_key);
	snprintf(at, sizeof(at), "%lld", (long long)sl->s_at_us);
	snprintf(tokens, sizeof(tokens), "%lld", sl->s_req->sr_tokens);
	declared_str(cfg, sl->s_req->sr_model, declared, sizeof(declared));
	snprintf(cq, sizeof(cq), "%lld", sl->s_cq);
	snprintf(ct, sizeof(ct), "%lld", sl->s_ct);
	snprintf(rt, sizeof(rt), "%lld", sl->s_rt);
	snprintf(status, sizeof(status), "%ld", o ? o->so_status : 0L);
	limits_str(o && strcmp(mode, "usage") != 0 ? o->so_limits : NULL,
		   limits, sizeof(limits));
	snprintf(used, sizeof(used), "%lld", o ? o->so_used : -1LL);
	if (o != NULL && o->so_hdr_ns > 0) {
		age_ns = mono_ns() - o->so_hdr_ns;
		if (age_ns < 0)
			age_ns = 0;
	}
	snprintf(age, sizeof(age), "%lld", (long long)(age_ns / 1000));
	snprintf(rest, sizeof(rest), "%lld",
		 (long long)(o == NULL		 ? 0
			     : o->so_rest_ms > 0 ? o->so_rest_ms
						 : cfg->key_cooldown_ms) *
			 1000);
	argv[2] = "3";
	argv[3] = budget_key(s, cfg->key_org[sl->s_key], sl->s_req->sr_model);
	argv[4] = s->sc_key_slot;
	argv[5] = s->sc_key_kslot;
	argv[6] = idx;
	argv[7] = at;
	argv[8] = mode;
	argv[9] = tokens;
	argv[10] = declared;
	argv[11] = cq;
	argv[12] = ct;
	argv[13] = rt;
	argv[14] = status;
	argv[15] = limits;
	argv[16] = used;
	argv[17] = age;
	argv[18] = sl->s_probe ? "1" : "0";
	argv[19] = rest;
	argv[20] = sl->s_first ? "1" : "0";
	err = int_reply(
		sched_redis_eval(s, &s->sc_settle, 21, argv, errbuf, errsz),
		"script", &v, errbuf, errsz);
	if (err == CP_OK)
		*ran_out = (int)v;
	return err;
}
