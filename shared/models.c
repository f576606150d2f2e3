/*
 * models.c - the models endpoints (see models.h).
 *
 * The list is kept in one POSIX shared memory object per host (per user,
 * upstream and set of keys: see cache_name), so every worker process and
 * thread of the host answers from the same copy and Cerebras is asked
 * once per MODELS_CACHE_S. The object holds a small lock (the holder's
 * pid, as sched_local.c's), the time of the fetch and the answer's bytes;
 * all-zero is a valid, empty cache. When the object cannot be had (a
 * name taken by another user, no /dev/shm) the process keeps a cache of
 * its own, and says so once.
 */
#include "models.h"

#include "sched_local.h"

#include "chat.h"
#include "clients.h"
#include "log.h"
#include "metrics.h"
#include "reqbody.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * The largest answer taken from Cerebras (its list is about 2 KiB), and
 * so the size of the shared object (populated when mapped).
 */
#define MODELS_BODY_MAX (256 * 1024)
/* Part of the object's name: a new layout gets a new object. */
#define MODELS_LAYOUT "models-1"
/*
 * While one request refreshes an expired list, the others answer from
 * the old one; the claim lapses after this long, so after a failed
 * refresh at most one request per this time asks Cerebras again.
 */
#define MODELS_REFRESH_HOLD_NS (30 * 1000000000LL)
/* A lock held this long is checked for a holder that died. */
#define MODELS_LOCK_CHECK_NS (100 * 1000000LL)
#define MODELS_ID_MAX	     (REQBODY_MODEL_MAX - 1)

/* The shared object (or a process's own copy). Zero: empty. */
struct models_cache {
	_Atomic int32_t mc_lock;       /* 0 when free, else the holder's pid */
	_Atomic int64_t mc_refresh_ns; /* a refresh is under way until then */
	int64_t mc_fetched_ns; /* CLOCK_MONOTONIC of the fetch; 0: empty */
	uint32_t mc_len;
	char mc_body[MODELS_BODY_MAX];
};

/* The process's view of the cache: opened at the first request. */
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct models_cache *cache; /* mapped or allocated; never freed */

/* The next key to ask with (round-robin within the process). */
static atomic_uint next_key;

/* One models request: what its answer and log line need. */
struct mreq {
	struct worker *m_w;
	const struct request_io *m_io;
	struct resp *m_r;
	struct client m_client;
	char m_rid[CHAT_REQUEST_ID_MAX + 1];
	int64_t m_t0;
	const char *m_id; /* the model asked for; NULL: the list */
	char m_idbuf[MODELS_ID_MAX + 1];
	const char *m_cache; /* hit, miss, stale, or "-" (not looked at) */
	int m_key;	     /* the last key used upstream, -1: none */
	int m_refused;	     /* keys that upstream answered 401/403 */
	struct upstream_res m_res;
	struct buf m_body;		/* owned: the upstream's answer */
	struct buf m_cached;		/* owned: a copy of the cached list */
	int64_t m_fetched_ns;		/* of m_cached; 0: none */
	char m_detail[CURL_ERROR_SIZE]; /* why it failed, for the log */
};

/*
 * The object's name: the per-host scheduler state's fingerprint (so what
 * removes that state finds this too), then one of the upstream and the
 * set of keys (another organisation may see other models), then the euid:
 * "/cerebras-proxy-models-<8 hex>-<8 hex>-<euid>".
 */
void
models_cache_name(const struct config *cfg, char *out, size_t outsz)
{
	struct buf id;
	char fp[10];
	int i;

	buf_init(&id, 64 * 1024);
	if (buf_printf(&id, "%s\n%s", MODELS_LAYOUT, cfg->models_url) != CP_OK)
		buf_reset(&id);
	for (i = 0; i < cfg->nkeys; i++)
		if (buf_printf(&id, "\n%s", cfg->key_fps[i]) != CP_OK)
			break;
	fp[0] = '-';
	key_fingerprint(id.b_p != NULL ? id.b_p : MODELS_LAYOUT, fp + 1);
	buf_free(&id);
	sched_local_name_for(cfg, "models-", fp, out, outsz);
}

/*
 * The cache, opened at the first call: the host's object, else one of
 * this process's own. NULL only if neither can be had (no memory).
 */
static struct models_cache *
cache_get(const struct config *cfg)
{
	struct models_cache *mc;
	char name[96];
	char err[256];

	if (pthread_mutex_lock(&cache_mu) != 0)
		return NULL;
	if (cache == NULL) {
		models_cache_name(cfg, name, sizeof(name));
		cache = shm_map_private(name, sizeof(*cache), err, sizeof(err));
		if (cache == NULL) {
			log_warnx("models cache: %s; this process keeps a "
				  "cache of its own",
				  err);
			cache = calloc(1, sizeof(*cache));
		}
	}
	mc = cache;
	(void)pthread_mutex_unlock(&cache_mu);
	return mc;
}

/*
 * Takes the cache's lock. It is held only to copy the list in or out; a
 * holder that died holding it (its pid gone) is taken over, and the list
 * it was writing dropped.
 */
static void
cache_lock(struct models_cache *mc)
{
	int32_t me = (int32_t)getpid();
	int32_t cur;
	int64_t since = 0;

	for (;;) {
		cur = 0;
		if (atomic_compare_exchange_weak(&mc->mc_lock, &cur, me))
			return;
		if (cur == 0)
			continue;
		if (since == 0)
			since = mono_ns();
		else if (mono_ns() - since > MODELS_LOCK_CHECK_NS &&
			 kill((pid_t)cur, 0) != 0 && errno == ESRCH) {
			if (atomic_compare_exchange_strong(&mc->mc_lock, &cur,
							   me)) {
				mc->mc_fetched_ns = 0;
				return;
			}
			since = 0;
		}
		(void)sched_yield();
	}
}

static void
cache_unlock(struct models_cache *mc)
{
	atomic_store(&mc->mc_lock, 0);
}

/* A copy of the cached list into out; its fetch time, 0 if none. */
static int64_t
cache_read(struct models_cache *mc, struct buf *out)
{
	int64_t at = 0;

	buf_reset(out);
	cache_lock(mc);
	if (mc->mc_fetched_ns != 0 && mc->mc_len <= sizeof(mc->mc_body) &&
	    buf_add(out, mc->mc_body, mc->mc_len) == CP_OK)
		at = mc->mc_fetched_ns;
	cache_unlock(mc);
	return at;
}

static void
cache_write(struct models_cache *mc, const char *data, size_t len, int64_t at)
{
	if (len > sizeof(mc->mc_body))
		return;
	cache_lock(mc);
	memcpy(mc->mc_body, data, len);
	mc->mc_len = (uint32_t)len;
	mc->mc_fetched_ns = at;
	cache_unlock(mc);
}

/* 1 if this request is to refresh the list (no other one is). */
static int
cache_claim(struct models_cache *mc, int64_t now)
{
	int64_t cur = atomic_load(&mc->mc_refresh_ns);

	if (cur > now)
		return 0;
	return atomic_compare_exchange_strong(&mc->mc_refresh_ns, &cur,
					      now + MODELS_REFRESH_HOLD_NS);
}

/* A list as Cerebras sends it: an object with a "data" array. */
static int
list_ok(const char *body, size_t len)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	int ok = json_is_object(root) &&
		 json_is_array(json_object_get(root, "data"));

	json_decref(root);
	return ok;
}

/* A JSON text (for relaying an upstream answer as JSON). */
static int
json_ok(const char *body, size_t len)
{
	json_t *root = json_loadb(body, len, JSON_DECODE_ANY, NULL);
	int ok = root != NULL;

	json_decref(root);
	return ok;
}

/*
 * The object of the model id in a list, as compact JSON (free it), or
 * NULL if the list has none.
 */
static char *
list_find(const char *body, size_t len, const char *id)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	json_t *data = json_object_get(root, "data");
	json_t *m;
	json_t *mid;
	char *out = NULL;
	size_t i;

	json_array_foreach(data, i, m)
	{
		mid = json_object_get(m, "id");
		if (json_is_object(m) && json_is_string(mid) &&
		    strcmp(json_string_value(mid), id) == 0) {
			out = json_dumps(m, JSON_COMPACT);
			break;
		}
	}
	json_decref(root);
	return out;
}

/* A model id the proxy would send: visible ASCII, no '/', bounded. */
static int
id_ok(const char *id, size_t len)
{
	size_t i;

	if (len == 0 || len > MODELS_ID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)id[i] <= 0x20 ||
		    (unsigned char)id[i] >= 0x7f || id[i] == '/')
			return 0;
	return 1;
}

/* models_url + "/" + id, every byte but [A-Za-z0-9._~-] %-escaped. */
static enum cp_err
id_url(const struct config *cfg, const char *id, struct buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	enum cp_err err;
	char e[3];

	buf_reset(out);
	err = buf_printf(out, "%s/", cfg->models_url);
	for (; !err && *id != '\0'; id++) {
		if ((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') ||
		    (*id >= '0' && *id <= '9') || strchr("._~-", *id) != NULL) {
			err = buf_add(out, id, 1);
			continue;
		}
		e[0] = '%';
		e[1] = hex[(unsigned char)*id >> 4];
		e[2] = hex[(unsigned char)*id & 15];
		err = buf_add(out, e, 3);
	}
	return err;
}

static int
mreq_gone(void *ctx)
{
	const struct request_io *io = ctx;

	return io->io_gone(io->io_ctx);
}

/*
 * Which keys the scheduler has disabled (after a 401/403), into off[]
 * (nkeys entries, 1: disabled); 0 if it cannot tell (then none is
 * skipped) or every key is disabled (then each is tried).
 */
static int
keys_disabled(struct mreq *m, unsigned char *off)
{
	const struct config *cfg = m->m_w->w_cfg;
	struct sched_view *v = calloc(1, sizeof(*v));
	struct sched_key_view *kv = calloc((size_t)cfg->nkeys, sizeof(*kv));
	int i;
	int n = 0;

	if (v != NULL && kv != NULL) {
		v->sv_nkeys = cfg->nkeys;
		v->sv_keys = kv;
		if (sched_inspect(&m->m_w->w_sched, v) == CP_OK)
			for (i = 0; i < cfg->nkeys; i++) {
				off[i] = kv[i].kv_state == KEY_STATE_DISABLED;
				n += off[i];
			}
	}
	free(kv);
	free(v);
	return n < cfg->nkeys ? n : 0;
}

/*
 * GETs url from Cerebras into m_body, starting at the next key in turn
 * (skipping the keys the scheduler has disabled) and going on to the
 * next while a key is refused (401, 403: the scheduler disables it, as
 * for chat) or rate limited (429). CP_OK once an answer came
 * (m_res.us_status says which); else why none did (CP_ERR_HUP: the
 * client left).
 */
static enum cp_err
mreq_fetch(struct mreq *m, const char *url)
{
	const struct config *cfg = m->m_w->w_cfg;
	struct upstream_req ur;
	char hdrs[64 + CHAT_REQUEST_ID_MAX];
	unsigned char off[CONFIG_MAX_KEYS];
	unsigned start = atomic_fetch_add(&next_key, 1);
	long st;
	enum cp_err err = CP_OK;
	int skip;
	int i;
	int k;

	snprintf(hdrs, sizeof(hdrs),
		 "Accept: application/json\nX-Request-Id: %s\n", m->m_rid);
	memset(&ur, 0, sizeof(ur));
	ur.ur_url = url;
	ur.ur_hdr_lines = hdrs;
	memset(off, 0, sizeof(off));
	skip = keys_disabled(m, off);
	for (i = 0; i < cfg->nkeys; i++) {
		k = (int)((start + (unsigned)i) % (unsigned)cfg->nkeys);
		if (skip > 0 && off[k])
			continue;
		m->m_key = k;
		ur.ur_key = cfg->keys[m->m_key];
		err = upstream_get(&m->m_w->w_up, &ur, &m->m_body, mreq_gone,
				   (void *)m->m_io, &m->m_res);
		/* Counted with the chat's attempts; no slot, no first byte. */
		metrics_upstream(m->m_key, m->m_res.us_status, -1.0, -1);
		if (err) {
			snprintf(m->m_detail, sizeof(m->m_detail), "%s",
				 m->m_res.us_detail[0] ? m->m_res.us_detail
						       : cp_strerror(err));
			return err;
		}
		st = m->m_res.us_status;
		if (st == 401 || st == 403) {
			m->m_refused++;
			log_warnx("API key #%d (%s) was refused (%ld) by "
				  "Cerebras' models endpoint",
				  m->m_key, cfg->key_fps[m->m_key], st);
			sched_rest(&m->m_w->w_sched, m->m_key,
				   cfg->key_disable_ms, 1);
		} else if (st != 429)
			return CP_OK;
	}
	return CP_OK;
}

/*
 * Ends the response (a JSON answer leaves in one write, now), then logs
 * the request, so the log says how it really ended: 499 if the client
 * left before its answer was out.
 */
static void
mreq_log(const struct mreq *m, const char *outcome)
{
	const struct config *cfg = m->m_w->w_cfg;
	struct resp *r = m->m_r;
	char rid[80];
	char model[2 * MODELS_ID_MAX];
	char key[24];
	char up[24];

	if (r->r_started)
		(void)resp_finish(r);
	if (!cfg->log_requests)
		return;
	log_escape(m->m_rid, rid, sizeof(rid));
	log_escape(m->m_id != NULL ? m->m_id : "-", model, sizeof(model));
	if (m->m_key >= 0)
		snprintf(key, sizeof(key), "#%d(%s)", m->m_key,
			 cfg->key_fps[m->m_key]);
	else
		snprintf(key, sizeof(key), "-");
	if (m->m_res.us_status > 0)
		snprintf(up, sizeof(up), "%ld", m->m_res.us_status);
	else
		snprintf(up, sizeof(up), "-");
	log_info("models id=%s client=%s model=%s status=%d cache=%s key=%s "
		 "upstream_status=%s total_ms=%.1f %s",
		 rid, m->m_client.cl_name[0] ? m->m_client.cl_name : "-", model,
		 r->r_hup || !r->r_started ? 499 : r->r_status, m->m_cache, key,
		 up, (double)(mono_ns() - m->m_t0) / 1e6, outcome);
}

/* A JSON answer: data as the body, how the cache served it in headers. */
static void
mreq_send(struct mreq *m, int status, const char *data, size_t len,
	  int64_t fetched_ns)
{
	char extra[128];
	int n;

	n = snprintf(extra, sizeof(extra),
		     "Cache-Control: no-store\r\nX-Cache: %s\r\n", m->m_cache);
	if (fetched_ns != 0 && n > 0 && (size_t)n < sizeof(extra))
		snprintf(extra + n, sizeof(extra) - (size_t)n, "Age: %lld\r\n",
			 (long long)((mono_ns() - fetched_ns) / 1000000000));
	if (resp_begin(m->m_r, status, "application/json", extra) != CP_OK)
		return;
	m->m_r->r_buffered = 1;
	(void)resp_write(m->m_r, data, len);
}

/*
 * The answer when Cerebras gave none to use (err, or m_res's status) and
 * nothing cached can stand in: 502/504 for what is not an answer, the
 * upstream's status and JSON body relayed for what is.
 */
static void
mreq_fail(struct mreq *m, enum cp_err err)
{
	struct resp *r = m->m_r;
	long st = m->m_res.us_status;

	if (err == CP_ERR_UPSTREAM_TIMEOUT)
		resp_error(r, 504, "upstream_error", "upstream_timeout",
			   "Cerebras did not answer the models request in "
			   "time",
			   NULL);
	else if (err == CP_ERR_UPSTREAM_TOOBIG)
		resp_error(r, 502, "upstream_error", "upstream_bad_answer",
			   "Cerebras' answer to the models request was too "
			   "large",
			   NULL);
	else if (err)
		resp_error(r, 502, "upstream_error", "upstream_unreachable",
			   "Cerebras could not be reached for the models list "
			   "and none is cached",
			   NULL);
	else if (m->m_refused > 0 && (st == 401 || st == 403))
		/* Not the client's fault; the body may quote the key. */
		resp_error(r, 502, "upstream_error", "upstream_auth_failed",
			   "Cerebras refused every API key of the proxy", NULL);
	else if (st >= 200 && st < 600 && m->m_body.b_len > 0 &&
		 json_ok(m->m_body.b_p, m->m_body.b_len))
		mreq_send(m, (int)st, m->m_body.b_p, m->m_body.b_len, 0);
	else
		resp_error(r, 502, "upstream_error", "upstream_bad_answer",
			   "Cerebras' answer to the models request was not "
			   "JSON",
			   NULL);
}

/* What the log says of an upstream answer that was not used. */
static const char *
mreq_detail(struct mreq *m, enum cp_err err)
{
	if (!err)
		snprintf(m->m_detail, sizeof(m->m_detail),
			 "upstream answered %ld", m->m_res.us_status);
	return m->m_detail;
}

/*
 * The host's copy of the list into m (m_cached, m_fetched_ns; 0: none);
 * the cache, NULL when there is none (MODELS_CACHE_S=0, or unmapped).
 */
static struct models_cache *
mreq_read_cache(struct mreq *m)
{
	const struct config *cfg = m->m_w->w_cfg;
	struct models_cache *mc = NULL;

	if (cfg->models_cache_s > 0)
		mc = cache_get(cfg);
	if (mc != NULL)
		m->m_fetched_ns = cache_read(mc, &m->m_cached);
	return mc;
}

/* 1 if m's copy of the list is younger than MODELS_CACHE_S at now. */
static int
mreq_fresh(const struct mreq *m, int64_t now)
{
	return m->m_fetched_ns != 0 &&
	       now - m->m_fetched_ns <
		       (int64_t)m->m_w->w_cfg->models_cache_s * 1000000000;
}

/* GET /v1/models */
static void
mreq_list(struct mreq *m)
{
	const struct config *cfg = m->m_w->w_cfg;
	struct models_cache *mc = mreq_read_cache(m);
	int64_t now = mono_ns();
	enum cp_err err;
	int bad;

	if (mreq_fresh(m, now)) {
		m->m_cache = "hit";
		mreq_send(m, 200, m->m_cached.b_p, m->m_cached.b_len,
			  m->m_fetched_ns);
		mreq_log(m, "ok");
		return;
	}
	if (m->m_fetched_ns != 0 && !cache_claim(mc, now)) {
		m->m_cache = "stale";
		mreq_send(m, 200, m->m_cached.b_p, m->m_cached.b_len,
			  m->m_fetched_ns);
		mreq_log(m, "another request is refreshing the list");
		return;
	}
	m->m_cache = "miss";
	err = mreq_fetch(m, cfg->models_url);
	if (err == CP_ERR_HUP) {
		mreq_log(m, "client left");
		return;
	}
	/* A 200 that holds no list: not an answer to relay, nor to cache. */
	bad = !err && m->m_res.us_status == 200;
	if (bad && list_ok(m->m_body.b_p, m->m_body.b_len)) {
		if (mc != NULL) {
			cache_write(mc, m->m_body.b_p, m->m_body.b_len,
				    mono_ns());
			atomic_store(&mc->mc_refresh_ns, 0);
		}
		mreq_send(m, 200, m->m_body.b_p, m->m_body.b_len, 0);
		mreq_log(m, "ok");
		return;
	}
	if (bad)
		snprintf(m->m_detail, sizeof(m->m_detail),
			 "upstream answered 200 without a models list");
	else
		(void)mreq_detail(m, err);
	if (m->m_fetched_ns != 0) {
		m->m_cache = "stale";
		mreq_send(m, 200, m->m_cached.b_p, m->m_cached.b_len,
			  m->m_fetched_ns);
		mreq_log(m, m->m_detail);
		return;
	}
	if (bad)
		resp_error(m->m_r, 502, "upstream_error", "upstream_bad_answer",
			   "Cerebras answered without a models list", NULL);
	else
		mreq_fail(m, err);
	mreq_log(m, m->m_detail);
}

/* GET /v1/models/{id} */
static void
mreq_one(struct mreq *m)
{
	const struct config *cfg = m->m_w->w_cfg;
	int64_t now = mono_ns();
	struct buf url;
	char *obj = NULL;
	long st;
	enum cp_err err;

	(void)mreq_read_cache(m);
	if (m->m_fetched_ns != 0)
		obj = list_find(m->m_cached.b_p, m->m_cached.b_len, m->m_id);
	if (obj != NULL && mreq_fresh(m, now)) {
		m->m_cache = "hit";
		mreq_send(m, 200, obj, strlen(obj), m->m_fetched_ns);
		mreq_log(m, "ok");
		free(obj);
		return;
	}
	m->m_cache = "miss";
	buf_init(&url, strlen(cfg->models_url) + 3 * MODELS_ID_MAX + 2);
	err = id_url(cfg, m->m_id, &url);
	if (err) {
		resp_error(m->m_r, 500, "server_error", "internal_error",
			   "no memory for the upstream URL", NULL);
		mreq_log(m, "no memory");
		goto done;
	}
	err = mreq_fetch(m, url.b_p);
	st = m->m_res.us_status;
	if (err == CP_ERR_HUP) {
		mreq_log(m, "client left");
		goto done;
	}
	/* Cerebras' answer about the model (found or not) is relayed. */
	if (!err &&
	    ((st >= 200 && st < 300 &&
	      json_ok(m->m_body.b_p, m->m_body.b_len)) ||
	     (st >= 400 && st < 500 && st != 401 && st != 403 && st != 429))) {
		mreq_fail(m, err);
		mreq_log(m, st < 300 ? "ok" : mreq_detail(m, err));
		goto done;
	}
	(void)mreq_detail(m, err);
	if (obj != NULL) {
		m->m_cache = "stale";
		mreq_send(m, 200, obj, strlen(obj), m->m_fetched_ns);
	} else
		mreq_fail(m, err);
	mreq_log(m, m->m_detail);
done:
	buf_free(&url);
	free(obj);
}

void
models_handle(struct worker *w, const struct request_io *io, struct resp *r,
	      const char *id, size_t idlen)
{
	struct mreq m;
	const char *code = NULL;
	char detail[128];
	char msg[192];

	memset(&m, 0, sizeof(m));
	m.m_w = w;
	m.m_io = io;
	m.m_r = r;
	m.m_key = -1;
	m.m_cache = "-";
	m.m_t0 = mono_ns();
	if (io->io_accepted_ns > 0 && io->io_accepted_ns <= m.m_t0)
		m.m_t0 = io->io_accepted_ns;
	buf_init(&m.m_body, MODELS_BODY_MAX);
	buf_init(&m.m_cached, MODELS_BODY_MAX);
	chat_request_id(io, m.m_rid);
	r->r_request_id = m.m_rid;
	if (id != NULL) {
		memcpy(m.m_idbuf, id,
		       idlen < MODELS_ID_MAX ? idlen : MODELS_ID_MAX);
		m.m_id = m.m_idbuf;
	}
	if (chat_access(w->w_cfg, io, r, &m.m_client, &code, detail,
			sizeof(detail)) != CP_OK) {
		snprintf(msg, sizeof(msg), "refused: %s (%s)", code, detail);
		mreq_log(&m, msg);
		goto done;
	}
	if (id != NULL && !id_ok(id, idlen)) {
		resp_error(r, 400, "invalid_request_error", "invalid_model_id",
			   "a model id is 1 to 127 visible ASCII characters",
			   NULL);
		mreq_log(&m, "refused: invalid_model_id");
		goto done;
	}
	if (id != NULL)
		mreq_one(&m);
	else
		mreq_list(&m);
done:
	buf_free(&m.m_body);
	buf_free(&m.m_cached);
}
