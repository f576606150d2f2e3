/*
 * sched_redis.c - the Redis scheduler: connection upkeep and the scripts
 * (shared/lua/, compiled in by shared/lua/embed.sh).
 */
#include "sched_redis.h"

#include "headers.h"

#include <limits.h>
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
	s->sc_key_day = join_key(cfg->redis_prefix, "day");
	s->sc_key_bx = join_key(cfg->redis_prefix, "bx");
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
	    s->sc_key_day == NULL || s->sc_key_bx == NULL ||
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
	free(s->sc_key_day);
	free(s->sc_key_bx);
	for (o = 0; o < s->sc_nseen; o++)
		free(s->sc_seen[o]);
	free(s->sc_seen);
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
	s->sc_key_day = NULL;
	s->sc_key_bx = NULL;
	s->sc_seen = NULL;
	s->sc_nseen = 0;
	s->sc_key_budget = NULL;
	s->sc_argv = NULL;
	s->sc_orgmap = NULL;
	s->sc_key_client = NULL;
	s->sc_key_seats = NULL;
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
		    struct slot *out, struct clock_sample *clock, char *errbuf,
		    size_t errsz)
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
	clock->cs_sent_us = sent_us;
	clock->cs_recv_us = recv_us;
	/* reserve.lua's polls answer {-3, wait, 0, why}: no "now" in them. */
	clock->cs_redis_us =
		out->s_key == SLOT_POLL ? 0 : out->s_at_us - out->s_wait_us;
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
sched_redis_rest(struct sched_redis *s, int key, long ms, int disabled,
		 char *errbuf, size_t errsz)
{
	const char *argv[7];
	char idx[16];
	char us[32];

	snprintf(idx, sizeof(idx), "%d", key);
	snprintf(us, sizeof(us), "%lld", (long long)ms * 1000);
	argv[2] = "1";
	argv[3] = s->sc_key_state;
	argv[4] = idx;
	argv[5] = us;
	argv[6] = disabled ? "1" : "0";
	return sched_redis_eval_int(s, &s->sc_rest, 7, argv, errbuf, errsz);
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
	const char *argv[24];
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
	argv[2] = "6";
	argv[3] = budget_key(s, cfg->key_org[sl->s_key], sl->s_req->sr_model);
	argv[4] = s->sc_key_slot;
	argv[5] = s->sc_key_kslot;
	argv[6] = s->sc_key_state;
	argv[7] = s->sc_key_day;
	argv[8] = s->sc_key_bx;
	argv[9] = idx;
	argv[10] = at;
	argv[11] = mode;
	argv[12] = tokens;
	argv[13] = declared;
	argv[14] = cq;
	argv[15] = ct;
	argv[16] = rt;
	argv[17] = status;
	argv[18] = limits;
	argv[19] = used;
	argv[20] = age;
	argv[21] = sl->s_probe ? "1" : "0";
	argv[22] = rest;
	argv[23] = sl->s_first ? "1" : "0";
	err = int_reply(
		sched_redis_eval(s, &s->sc_settle, 24, argv, errbuf, errsz),
		"script", &v, errbuf, errsz);
	if (err == CP_OK)
		*ran_out = (int)v;
	return err;
}

/* --- the inspection ---------------------------------------------------- */

/* Budget hashes read per inspection: the most recently settled. */
#define INSPECT_BUDGETS 64
/* TIME, HGETALL keys, HGETALL day, two ZRANGEs, ZREVRANGE bx. */
#define INSPECT_FIXED 6

static const double window_us[CONFIG_NLIMITS] = {
	60e6, 60e6, 3600e6, 3600e6, 86400e6, 86400e6,
};

/* Each budget's capacity and empty time (settle.lua's k<l>, e<l>). */
static const char *const inspect_fields[2 * CONFIG_NLIMITS] = {
	"k0", "k1", "k2", "k3", "k4", "k5", "e0", "e1", "e2", "e3", "e4", "e5",
};

/* Appends one command to the pipeline; on failure, disconnects. */
static enum cp_err
pipe_append(struct sched_redis *s, int argc, const char **argv, char *errbuf,
	    size_t errsz)
{
	if (redisAppendCommandArgv(s->sc_ctx, argc, argv, NULL) == REDIS_OK)
		return CP_OK;
	snprintf(errbuf, errsz, "%s",
		 s->sc_ctx->errstr[0] ? s->sc_ctx->errstr : "out of memory");
	sched_redis_disconnect(s);
	return CP_ERR_REDIS;
}

/* Frees the n replies of r (NULLs skipped). */
static void
replies_free(redisReply **r, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		if (r[i] != NULL)
			freeReplyObject(r[i]);
		r[i] = NULL;
	}
}

/*
 * Reads the pipeline's n replies into r. An error reply or none at all
 * frees those read and drops the connection (the rest would be out of
 * step): CP_ERR_REDIS, errbuf saying why.
 */
static enum cp_err
pipe_read(struct sched_redis *s, redisReply **r, int n, char *errbuf,
	  size_t errsz)
{
	void *p;
	int i;

	for (i = 0; i < n; i++)
		r[i] = NULL;
	for (i = 0; i < n; i++) {
		p = NULL;
		if (redisGetReply(s->sc_ctx, &p) != REDIS_OK || p == NULL) {
			snprintf(errbuf, errsz, "%s",
				 s->sc_ctx->errstr[0] ? s->sc_ctx->errstr
						      : "no reply");
			break;
		}
		r[i] = p;
		if (r[i]->type == REDIS_REPLY_ERROR) {
			snprintf(errbuf, errsz, "inspection: %.200s",
				 r[i]->str);
			break;
		}
	}
	if (i == n)
		return CP_OK;
	replies_free(r, n);
	sched_redis_disconnect(s);
	return CP_ERR_REDIS;
}

/* An integer reply, or a string holding one: 0 and *out, else -1. */
static int
reply_ll(const redisReply *r, long long *out)
{
	const char *why;

	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER) {
		*out = r->integer;
		return 0;
	}
	if (r->type != REDIS_REPLY_STRING ||
	    parse_ll(r->str, LLONG_MIN, LLONG_MAX, out, &why) != CP_OK)
		return -1;
	return 0;
}

/* The key index in a field "<letter><i>" of key i < nkeys, else -1. */
static int
field_key(const char *f, char letter, int nkeys)
{
	long long i;
	const char *why;

	if (letter == '\0' || f[0] != letter ||
	    parse_ll(f + 1, 0, nkeys - 1, &i, &why) != CP_OK)
		return -1;
	return (int)i;
}

/* A ZRANGE ... WITHSCORES of one member: its score (us), else 0. */
static int64_t
last_score(const redisReply *r)
{
	char *end;
	double d;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_STRING)
		return 0;
	d = strtod(r->element[1]->str, &end);
	if (end == r->element[1]->str || *end != '\0' || !(d > 0) || d > 9e18)
		return 0;
	return (int64_t)d;
}

/* ms from now to t (us), rounded up; 0 if past. */
static int64_t
until_ms(int64_t t, int64_t now)
{
	return t > now ? (t - now + 999) / 1000 : 0;
}

/*
 * The organisation of budget hash name ("<prefix>:b:<org fp>:<model>"),
 * its model in *model; -1 for a name of no organisation configured here
 * or a model too long for a view.
 */
static int
budget_org(const struct config *cfg, const char *name, const char **model)
{
	size_t plen = strlen(cfg->redis_prefix);
	const char *fp;
	int o;

	if (strncmp(name, cfg->redis_prefix, plen) != 0 ||
	    strncmp(name + plen, ":b:", 3) != 0 ||
	    strnlen(name + plen + 3, 9) < 9 || name[plen + 3 + 8] != ':')
		return -1;
	fp = name + plen + 3;
	*model = fp + 9;
	if (strlen(*model) >= sizeof(((struct sched_budget_view *)0)->bv_model))
		return -1;
	for (o = 0; o < cfg->norgs; o++)
		if (memcmp(cfg->org_fps[o], fp, 8) == 0)
			return o;
	return -1;
}

/* One budget hash's limits (its HMGET reply r) into v, at now. */
static void
inspect_budget(const struct config *cfg, const char *name, const redisReply *r,
	       int64_t now, struct sched_view *v)
{
	struct sched_budget_view *bv;
	long long declared[CONFIG_NLIMITS];
	long long k;
	long long e;
	long long cap;
	const char *model = "";
	double level;
	int org = budget_org(cfg, name, &model);
	int l;

	if (org < 0 || r->type != REDIS_REPLY_ARRAY ||
	    r->elements != NELEM(inspect_fields))
		return;
	config_declared(cfg, model, declared);
	for (l = 0; l < CONFIG_NLIMITS; l++) {
		if (reply_ll(r->element[l], &k) != 0)
			k = 0;
		if (reply_ll(r->element[CONFIG_NLIMITS + l], &e) != 0)
			e = 0;
		cap = k > 0 ? k : declared[l];
		if (cap <= 0 || v->sv_nbudgets >= SCHED_VIEW_BUDGETS)
			continue;
		bv = &v->sv_budgets[v->sv_nbudgets++];
		memset(bv, 0, sizeof(*bv));
		bv->bv_org = org;
		snprintf(bv->bv_model, sizeof(bv->bv_model), "%s", model);
		bv->bv_limit = l;
		bv->bv_cap = cap;
		level = ((double)now - (double)e) * (double)cap / window_us[l];
		bv->bv_level = level < 0	     ? 0
			       : level > (double)cap ? cap
						     : (long long)level;
	}
}

/* By organisation, model, limit: the same order every time. */
static int
budget_cmp(const void *a, const void *b)
{
	const struct sched_budget_view *x = a;
	const struct sched_budget_view *y = b;
	int c;

	if (x->bv_org != y->bv_org)
		return x->bv_org < y->bv_org ? -1 : 1;
	c = strcmp(x->bv_model, y->bv_model);
	if (c != 0)
		return c;
	return x->bv_limit - y->bv_limit;
}

/* Appends an HMGET of each of n budget hashes to the pipeline. */
static enum cp_err
append_budgets(struct sched_redis *s, char *const *names, int n, char *errbuf,
	       size_t errsz)
{
	const char *argv[2 + NELEM(inspect_fields)];
	enum cp_err err;
	size_t f;
	int i;

	argv[0] = "HMGET";
	for (f = 0; f < NELEM(inspect_fields); f++)
		argv[2 + f] = inspect_fields[f];
	for (i = 0; i < n; i++) {
		argv[1] = names[i];
		err = pipe_append(s, (int)NELEM(argv), argv, errbuf, errsz);
		if (err)
			return err;
	}
	return CP_OK;
}

/*
 * Takes the budgets in use from bx (ZREVRANGE's reply, of this
 * configuration's organisations) as the ones to read: 1 if they differ
 * from those read (sc_seen), which are replaced; 0 if the same; -1 out of
 * memory.
 */
static int
seen_update(struct sched_redis *s, const redisReply *bx)
{
	const char *model;
	char **names;
	size_t i;
	int n = 0;
	int same;

	if (bx->type != REDIS_REPLY_ARRAY)
		return 0;
	names = calloc(bx->elements + 1, sizeof(char *));
	if (names == NULL)
		return -1;
	for (i = 0; i < bx->elements && n < INSPECT_BUDGETS; i++) {
		if (bx->element[i]->type != REDIS_REPLY_STRING ||
		    budget_org(s->sc_cfg, bx->element[i]->str, &model) < 0)
			continue;
		names[n] = strdup(bx->element[i]->str);
		if (names[n] == NULL)
			break;
		n++;
	}
	if (i < bx->elements && n < INSPECT_BUDGETS) {
		while (n > 0)
			free(names[--n]);
		free(names);
		return -1;
	}
	same = n == s->sc_nseen;
	for (i = 0; same && i < (size_t)n; i++)
		same = strcmp(names[i], s->sc_seen[i]) == 0;
	if (same) {
		while (n > 0)
			free(names[--n]);
		free(names);
		return 0;
	}
	for (i = 0; i < (size_t)s->sc_nseen; i++)
		free(s->sc_seen[i]);
	free(s->sc_seen);
	s->sc_seen = names;
	s->sc_nseen = n;
	return 1;
}

/* The keys' states and counts from the keys and day hashes, at now. */
static void
inspect_keys(const struct config *cfg, const redisReply *keys,
	     const redisReply *day, int64_t now, struct sched_view *v)
{
	struct sched_key_view *kv;
	const char *f;
	long long x;
	long long today = -1;
	size_t j;
	int n = v->sv_nkeys < cfg->nkeys ? v->sv_nkeys : cfg->nkeys;
	int i;
	/* c<i>, d<i>, r<i>: until (us); s<i> the last status */
	int64_t rest[CONFIG_MAX_KEYS] = {0};
	int64_t dis[CONFIG_MAX_KEYS] = {0};
	int64_t cool[CONFIG_MAX_KEYS] = {0};

	for (i = 0; i < n; i++) {
		memset(&v->sv_keys[i], 0, sizeof(v->sv_keys[i]));
		v->sv_keys[i].kv_state = KEY_STATE_OK;
	}
	for (j = 0; keys->type == REDIS_REPLY_ARRAY && j + 1 < keys->elements;
	     j += 2) {
		if (keys->element[j]->type != REDIS_REPLY_STRING ||
		    reply_ll(keys->element[j + 1], &x) != 0)
			continue;
		f = keys->element[j]->str;
		i = field_key(f, f[0], n);
		if (i < 0)
			continue;
		switch (f[0]) {
		case 'c': rest[i] = x; break;
		case 'd': dis[i] = x; break;
		case 'r': cool[i] = x; break;
		case 's': v->sv_keys[i].kv_last_status = (long)x; break;
		default: break;
		}
	}
	for (j = 0; day->type == REDIS_REPLY_ARRAY && j + 1 < day->elements;
	     j += 2)
		if (day->element[j]->type == REDIS_REPLY_STRING &&
		    strcmp(day->element[j]->str, "d") == 0 &&
		    reply_ll(day->element[j + 1], &x) == 0)
			today = x;
	for (j = 0; today == now / 86400000000LL &&
		    day->type == REDIS_REPLY_ARRAY && j + 1 < day->elements;
	     j += 2) {
		if (day->element[j]->type != REDIS_REPLY_STRING ||
		    reply_ll(day->element[j + 1], &x) != 0)
			continue;
		f = day->element[j]->str;
		i = field_key(f, f[0], n);
		if (i >= 0 && f[0] == 'q')
			v->sv_keys[i].kv_requests = x;
		else if (i >= 0 && f[0] == 't')
			v->sv_keys[i].kv_tokens = x;
	}
	for (i = 0; i < n; i++) {
		kv = &v->sv_keys[i];
		if (dis[i] > now) {
			kv->kv_state = KEY_STATE_DISABLED;
			kv->kv_until_ms = until_ms(dis[i], now);
		} else if (rest[i] > now) {
			kv->kv_state = KEY_STATE_RESTING;
			kv->kv_until_ms = until_ms(rest[i], now);
		} else if (cool[i] > now) {
			kv->kv_state = KEY_STATE_RESTING;
			kv->kv_until_ms = until_ms(cool[i], now);
		}
	}
}

enum cp_err
sched_redis_inspect(struct sched_redis *s, struct sched_view *v, char *errbuf,
		    size_t errsz)
{
	const struct config *cfg = s->sc_cfg;
	redisReply *r[INSPECT_FIXED + INSPECT_BUDGETS];
	const char *argv[6];
	char top[16];
	long long sec;
	long long usec;
	int64_t now;
	int64_t last;
	int nread;
	int changed;
	int i;
	enum cp_err err;

	v->sv_nbudgets = 0;
	v->sv_depth_ms = 0;
	if (s->sc_ctx == NULL && sched_redis_connect(s, errbuf, errsz) != CP_OK)
		return CP_ERR_REDIS;
	snprintf(top, sizeof(top), "%d", INSPECT_BUDGETS - 1);
	argv[0] = "TIME";
	err = pipe_append(s, 1, argv, errbuf, errsz);
	argv[0] = "HGETALL";
	argv[1] = s->sc_key_state;
	if (!err)
		err = pipe_append(s, 2, argv, errbuf, errsz);
	argv[1] = s->sc_key_day;
	if (!err)
		err = pipe_append(s, 2, argv, errbuf, errsz);
	argv[0] = "ZRANGE";
	argv[1] = s->sc_key_slot;
	argv[2] = "-1";
	argv[3] = "-1";
	argv[4] = "WITHSCORES";
	if (!err)
		err = pipe_append(s, 5, argv, errbuf, errsz);
	argv[1] = s->sc_key_kslot;
	if (!err)
		err = pipe_append(s, 5, argv, errbuf, errsz);
	argv[0] = "ZREVRANGE";
	argv[1] = s->sc_key_bx;
	argv[2] = "0";
	argv[3] = top;
	if (!err)
		err = pipe_append(s, 4, argv, errbuf, errsz);
	if (!err)
		err = append_budgets(s, s->sc_seen, s->sc_nseen, errbuf, errsz);
	if (err)
		return err;
	nread = INSPECT_FIXED + s->sc_nseen;
	err = pipe_read(s, r, nread, errbuf, errsz);
	if (err)
		return err;
	if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements != 2 ||
	    reply_ll(r[0]->element[0], &sec) != 0 ||
	    reply_ll(r[0]->element[1], &usec) != 0) {
		snprintf(errbuf, errsz, "inspection: unexpected TIME reply");
		replies_free(r, nread);
		return CP_ERR_REDIS;
	}
	now = (int64_t)sec * 1000000 + usec;
	inspect_keys(cfg, r[1], r[2], now, v);
	last = last_score(r[3]);
	if (last_score(r[4]) > last)
		last = last_score(r[4]);
	v->sv_depth_ms = until_ms(last, now);
	changed = seen_update(s, r[5]);
	if (changed < 0) {
		replies_free(r, nread);
		snprintf(errbuf, errsz, "inspection: out of memory");
		return CP_ERR_REDIS;
	}
	if (!changed) {
		for (i = 0; i < s->sc_nseen; i++)
			inspect_budget(cfg, s->sc_seen[i], r[INSPECT_FIXED + i],
				       now, v);
		replies_free(r, nread);
	} else {
		/* New budgets in use: read them (a second round trip). */
		replies_free(r, nread);
		err = append_budgets(s, s->sc_seen, s->sc_nseen, errbuf, errsz);
		if (!err)
			err = pipe_read(s, r, s->sc_nseen, errbuf, errsz);
		if (err)
			return err;
		for (i = 0; i < s->sc_nseen; i++)
			inspect_budget(cfg, s->sc_seen[i], r[i], now, v);
		replies_free(r, s->sc_nseen);
	}
	qsort(v->sv_budgets, (size_t)v->sv_nbudgets, sizeof(v->sv_budgets[0]),
	      budget_cmp);
	return CP_OK;
}
