/*
 * metrics.c - the host's counters and their exposition (see metrics.h).
 */
#include "metrics.h"

#include "clients.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * Bump when the layout changes: the name changes with it, so workers of
 * an older build on the same host never misread the counters.
 */
#define METRICS_LAYOUT "1"

/* A scrape's text is capped here (the worst case is ~2 MB). */
#define METRICS_TEXT_MAX (8 * 1024 * 1024)

#define NAME_CAP 128 /* an interned name's bytes, its NUL included */

/* Process-shared atomics must not be emulated with a lock. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "int atomics must be lock-free");

typedef atomic_ullong mctr;

/*
 * Status codes counted by their own value; any other is counted by its
 * class ("4xx"), or as "other" outside 100..599; an attempt that got no
 * answer (a connection failure, a timeout) as "none".
 */
static const short exact_codes[] = {200, 201, 204, 400, 401, 403, 404,
				    405, 408, 409, 413, 414, 415, 422,
				    429, 499, 500, 501, 502, 503, 504};
#define NEXACT	   ((int)NELEM(exact_codes))
#define CODE_CLASS NEXACT	/* + 0..4: 1xx..5xx */
#define CODE_OTHER (NEXACT + 5) /* outside 100..599 */
#define CODE_NONE  (NEXACT + 6) /* no answer */
#define NCODES	   (NEXACT + 7)

/*
 * Histogram buckets, upper bounds in microseconds (the "le" labels are
 * these in seconds); the last bucket is +Inf. Sums are kept in us.
 */
#define HIST_MAX 16
static const int64_t dur_us[] = {1000,	   5000,     10000,	25000,
				 50000,	   100000,   250000,	500000,
				 1000000,  2500000,  5000000,	10000000,
				 30000000, 60000000, 120000000, 300000000};
static const int64_t queue_us[] = {
	1000,	5000,	 10000,	  25000,   50000,    100000,   250000,
	500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};
static const int64_t ttfb_us[] = {25000,    50000,    100000,  250000,
				  500000,   1000000,  2500000, 5000000,
				  10000000, 30000000, 60000000};
static const int64_t late_us[] = {100,	 250,	500,   1000,   2500,   5000,
				  10000, 25000, 50000, 100000, 250000, 1000000};

_Static_assert(NELEM(dur_us) <= HIST_MAX && NELEM(queue_us) <= HIST_MAX &&
		       NELEM(ttfb_us) <= HIST_MAX && NELEM(late_us) <= HIST_MAX,
	       "HIST_MAX is too small");

struct m_hist {
	mctr h_n[HIST_MAX + 1]; /* per bucket (not cumulative), +Inf last */
	mctr h_sum_us;
};

/* An interned label value: written once, then only read. */
enum { NAME_FREE, NAME_WRITING, NAME_READY };
struct m_name {
	atomic_uint n_state;
	uint32_t n_hash;
	char n_name[NAME_CAP];
};

/*
 * A process's gauges. p_pid: 0 free, > 0 its owner, < 0 being claimed
 * by -p_pid. A slot whose owner is dead is not counted, and is taken by
 * the next process that needs one. Padded to its own cache line.
 */
struct m_proc {
	atomic_int p_pid;
	atomic_llong p_inflight;
	atomic_llong p_streams;
	char p_pad[64 - sizeof(atomic_int) - 2 * sizeof(atomic_llong)];
};

struct metrics_shm {
	mctr m_requests[METRICS_NROUTES][NCODES];
	mctr m_upstream[CONFIG_MAX_KEYS][NCODES];
	mctr m_limited[CONFIG_MAX_KEYS][HDR_NLIMITS + 1]; /* + "unknown" */
	/* [key][model, METRICS_MODELS: "other"][0 prompt, 1 completion] */
	mctr m_tokens[CONFIG_MAX_KEYS][METRICS_MODELS + 1][2];
	mctr m_client_tokens[METRICS_CLIENTS + 1][2]; /* + "other" */
	struct m_hist m_duration[METRICS_NROUTES];
	struct m_hist m_queue;
	struct m_hist m_ttfb;
	struct m_hist m_late;
	struct m_name m_models[METRICS_MODELS];
	struct m_name m_clients[METRICS_CLIENTS];
	/* the last: shared by processes that found no slot of their own */
	struct m_proc m_procs[METRICS_PROCS + 1];
};

static const char *const route_names[METRICS_NROUTES] = {
	"chat",	 "completions", "models",    "health",
	"ready", "metrics",	"preflight", "other",
};

static const char *const kind_names[2] = {"prompt", "completion"};

/* This process's counters and gauge slot; NULL while metrics are off. */
static _Atomic(struct metrics_shm *) m_shm;
static _Atomic(struct m_proc *) m_me;

static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int m_opened; /* metrics_open has run in this process */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

#define ADD(ctr, n) atomic_fetch_add_explicit(&(ctr), (n), memory_order_relaxed)

/* --- the shared object ------------------------------------------------ */

void
metrics_name(const struct config *cfg, char *out, size_t outsz)
{
	/* One per proxy and user, beside the scheduler state. */
	sched_local_name_for(cfg, "metrics" METRICS_LAYOUT "-", "", out, outsz);
}

size_t
metrics_size(void)
{
	return sizeof(struct metrics_shm);
}

static int
pid_alive(int pid)
{
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/*
 * A gauge slot for process me: one it held before under the same pid (a
 * stale one: it has just started), a free one, or one whose owner is
 * dead; else the shared last slot.
 */
static struct m_proc *
proc_claim(struct metrics_shm *m, int me)
{
	struct m_proc *p;
	int pass, i, pid;

	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < METRICS_PROCS; i++) {
			p = &m->m_procs[i];
			pid = atomic_load(&p->p_pid);
			if (pass == 0 ? pid != me
				      : pid == me ||
						(pid > 0 && pid_alive(pid)) ||
						(pid < 0 && pid_alive(-pid)))
				continue;
			if (!atomic_compare_exchange_strong(&p->p_pid, &pid,
							    -me))
				continue;
			atomic_store(&p->p_inflight, 0);
			atomic_store(&p->p_streams, 0);
			atomic_store(&p->p_pid, me);
			return p;
		}
	}
	return &m->m_procs[METRICS_PROCS];
}

/*
 * A fork (the supervisor's, or any other) leaves the lock free in the
 * child, whatever another thread was doing, and the child without a
 * gauge slot: its next metrics_open claims one of its own (the mapping
 * is inherited and kept).
 */
static void
fork_prepare(void)
{
	pthread_mutex_lock(&open_lock);
}

static void
fork_parent(void)
{
	pthread_mutex_unlock(&open_lock);
}

static void
fork_child(void)
{
	atomic_store(&m_me, NULL);
	atomic_store(&m_opened, 0);
	pthread_mutex_unlock(&open_lock);
}

static void
atfork_register(void)
{
	int rc = pthread_atfork(fork_prepare, fork_parent, fork_child);

	if (rc != 0)
		log_warnx("pthread_atfork: %s; a forked process shares its "
			  "parent's gauges",
			  strerror(rc));
}

void
metrics_open(const struct config *cfg)
{
	struct metrics_shm *m;
	char name[96];
	char errbuf[256];

	if (atomic_load_explicit(&m_opened, memory_order_acquire))
		return;
	(void)pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&open_lock);
	if (atomic_load(&m_opened)) {
		pthread_mutex_unlock(&open_lock);
		return;
	}
	m = atomic_load(&m_shm); /* inherited from the parent: kept */
	if (m == NULL) {
		metrics_name(cfg, name, sizeof(name));
		m = shm_map_private(name, sizeof(*m), errbuf, sizeof(errbuf));
		if (m == NULL)
			log_warnx("metrics are off in this process (pid %ld): "
				  "%s",
				  (long)getpid(), errbuf);
	}
	if (m != NULL) {
		atomic_store(&m_me, proc_claim(m, (int)getpid()));
		atomic_store(&m_shm, m);
	}
	/* Tried once per process: a failure is not retried per request. */
	atomic_store_explicit(&m_opened, 1, memory_order_release);
	pthread_mutex_unlock(&open_lock);
}

void
metrics_use(void *mem)
{
	struct metrics_shm *m = mem;

	(void)pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&open_lock);
	atomic_store(&m_me, m != NULL ? proc_claim(m, (int)getpid()) : NULL);
	atomic_store(&m_shm, m);
	atomic_store(&m_opened, 1);
	pthread_mutex_unlock(&open_lock);
}

/* --- recording ---------------------------------------------------------- */

enum metrics_route
metrics_route_of(enum route r)
{
	switch (r) {
	case ROUTE_CHAT: return METRICS_ROUTE_CHAT;
	case ROUTE_COMPLETIONS: return METRICS_ROUTE_COMPLETIONS;
	case ROUTE_MODELS:
	case ROUTE_MODEL: return METRICS_ROUTE_MODELS;
	case ROUTE_HEALTH: return METRICS_ROUTE_HEALTH;
	case ROUTE_READY: return METRICS_ROUTE_READY;
	case ROUTE_METRICS: return METRICS_ROUTE_METRICS;
	case ROUTE_PREFLIGHT: return METRICS_ROUTE_PREFLIGHT;
	case ROUTE_NOT_ALLOWED:
	case ROUTE_NOT_FOUND: break;
	}
	return METRICS_ROUTE_OTHER;
}

static int
code_index(long status)
{
	int i;

	if (status == 0)
		return CODE_NONE;
	for (i = 0; i < NEXACT; i++)
		if (exact_codes[i] == status)
			return i;
	if (status >= 100 && status <= 599)
		return CODE_CLASS + (int)(status / 100) - 1;
	return CODE_OTHER;
}

static void
hist_add(struct m_hist *h, const int64_t *bounds, size_t n, int64_t us)
{
	size_t i = 0;

	if (us < 0)
		us = 0;
	while (i < n && us > bounds[i])
		i++;
	ADD(h->h_n[i], 1);
	ADD(h->h_sum_us, (unsigned long long)us);
}

#define HIST_ADD(h, bounds, us) hist_add((h), (bounds), NELEM(bounds), (us))

void
metrics_request_begin(void)
{
	struct m_proc *p = atomic_load_explicit(&m_me, memory_order_acquire);

	if (p != NULL)
		atomic_fetch_add_explicit(&p->p_inflight, 1,
					  memory_order_relaxed);
}

void
metrics_request_done(enum metrics_route route, int status, int64_t dur_ns)
{
	struct metrics_shm *m =
		atomic_load_explicit(&m_shm, memory_order_acquire);

	if (m == NULL || route < 0 || route >= METRICS_NROUTES)
		return;
	ADD(m->m_requests[route][code_index(status)], 1);
	HIST_ADD(&m->m_duration[route], dur_us, dur_ns / 1000);
}

void
metrics_request_end(enum metrics_route route, int status, int64_t dur_ns)
{
	struct m_proc *p = atomic_load_explicit(&m_me, memory_order_acquire);

	if (p != NULL)
		atomic_fetch_sub_explicit(&p->p_inflight, 1,
					  memory_order_relaxed);
	metrics_request_done(route, status, dur_ns);
}

void
metrics_upstream(int key, long status, double ttfb_ms, int64_t late)
{
	struct metrics_shm *m =
		atomic_load_explicit(&m_shm, memory_order_acquire);

	if (m == NULL || key < 0 || key >= CONFIG_MAX_KEYS)
		return;
	ADD(m->m_upstream[key][code_index(status)], 1);
	if (status != 0 && ttfb_ms >= 0)
		HIST_ADD(&m->m_ttfb, ttfb_us, (int64_t)(ttfb_ms * 1000.0));
	if (late >= 0)
		HIST_ADD(&m->m_late, late_us, late);
}

void
metrics_rate_limited(int key, int limit)
{
	struct metrics_shm *m =
		atomic_load_explicit(&m_shm, memory_order_acquire);

	if (m == NULL || key < 0 || key >= CONFIG_MAX_KEYS)
		return;
	if (limit < 0 || limit >= HDR_NLIMITS)
		limit = HDR_NLIMITS;
	ADD(m->m_limited[key][limit], 1);
}

void
metrics_queue_wait(int64_t ns)
{
	struct metrics_shm *m =
		atomic_load_explicit(&m_shm, memory_order_acquire);

	if (m != NULL)
		HIST_ADD(&m->m_queue, queue_us, ns / 1000);
}

void
metrics_stream(int delta)
{
	struct m_proc *p = atomic_load_explicit(&m_me, memory_order_acquire);

	if (p != NULL)
		atomic_fetch_add_explicit(&p->p_streams, delta,
					  memory_order_relaxed);
}

static uint32_t
name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

/*
 * name's entry in table t (n entries), added if absent and there is
 * room; n ("other") if not. Entries are taken in order and never freed,
 * so the scan can stop at the first free one. Two processes adding the
 * same name at once may both add it: the scrape adds such twins up.
 */
static int
intern(struct m_name *t, int n, const char *name)
{
	size_t len = strlen(name);
	uint32_t h;
	unsigned st, want;
	int i;

	if (len == 0 || len >= NAME_CAP)
		return n;
	h = name_hash(name);
	for (i = 0; i < n; i++) {
		st = atomic_load_explicit(&t[i].n_state, memory_order_acquire);
		if (st == NAME_FREE) {
			want = NAME_FREE;
			if (atomic_compare_exchange_strong(&t[i].n_state, &want,
							   NAME_WRITING)) {
				memcpy(t[i].n_name, name, len + 1);
				t[i].n_hash = h;
				atomic_store_explicit(&t[i].n_state, NAME_READY,
						      memory_order_release);
				return i;
			}
			st = want;
		}
		if (st == NAME_READY && t[i].n_hash == h &&
		    strcmp(t[i].n_name, name) == 0)
			return i;
	}
	return n;
}

void
metrics_tokens(int key, const char *model, const char *client, long long prompt,
	       long long completion)
{
	struct metrics_shm *m =
		atomic_load_explicit(&m_shm, memory_order_acquire);
	long long n[2] = {prompt, completion};
	int mi, ci = -1, k;

	if (m == NULL || key < 0 || key >= CONFIG_MAX_KEYS ||
	    (prompt <= 0 && completion <= 0))
		return;
	mi = intern(m->m_models, METRICS_MODELS, model != NULL ? model : "");
	if (client != NULL && client[0] != '\0')
		ci = intern(m->m_clients, METRICS_CLIENTS, client);
	for (k = 0; k < 2; k++) {
		if (n[k] <= 0)
			continue;
		ADD(m->m_tokens[key][mi][k], (unsigned long long)n[k]);
		if (ci >= 0)
			ADD(m->m_client_tokens[ci][k],
			    (unsigned long long)n[k]);
	}
}

/* --- exposition -------------------------------------------------------- */

enum cp_err
metrics_escape(struct buf *b, const char *s)
{
	const char *run = s;
	enum cp_err err = CP_OK;

	for (; *s != '\0' && !err; s++) {
		if (*s != '\\' && *s != '"' && *s != '\n')
			continue;
		err = buf_add(b, run, (size_t)(s - run));
		if (!err)
			err = buf_adds(b, *s == '\\'  ? "\\\\"
					  : *s == '"' ? "\\\""
						      : "\\n");
		run = s + 1;
	}
	if (!err)
		err = buf_adds(b, run);
	return err;
}

static enum cp_err
family(struct buf *b, const char *name, const char *type, const char *help)
{
	return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
			  type);
}

static void
code_label(int i, char *out, size_t outsz)
{
	static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx",
					      "5xx"};

	if (i < NEXACT)
		snprintf(out, outsz, "%d", exact_codes[i]);
	else if (i < CODE_OTHER)
		snprintf(out, outsz, "%s", classes[i - CODE_CLASS]);
	else
		snprintf(out, outsz, "%s", i == CODE_OTHER ? "other" : "none");
}

/*
 * A histogram's samples: cumulative buckets, _sum and _count (the +Inf
 * bucket's, so the two always agree). labels: "route=\"chat\"," or "".
 */
static enum cp_err
hist_render(struct buf *b, const char *name, const char *labels,
	    const struct m_hist *h, const int64_t *bounds, size_t n)
{
	unsigned long long cum = 0;
	enum cp_err err = CP_OK;
	size_t i;

	for (i = 0; i <= n && !err; i++) {
		cum += atomic_load_explicit(&h->h_n[i], memory_order_relaxed);
		if (i < n)
			err = buf_printf(b, "%s_bucket{%sle=\"%g\"} %llu\n",
					 name, labels, (double)bounds[i] / 1e6,
					 cum);
		else
			err = buf_printf(b, "%s_bucket{%sle=\"+Inf\"} %llu\n",
					 name, labels, cum);
	}
	if (!err && labels[0] != '\0')
		err = buf_printf(b, "%s_sum{%.*s} %.6f\n%s_count{%.*s} %llu\n",
				 name, (int)strlen(labels) - 1, labels,
				 (double)atomic_load_explicit(
					 &h->h_sum_us, memory_order_relaxed) /
					 1e6,
				 name, (int)strlen(labels) - 1, labels, cum);
	else if (!err)
		err = buf_printf(b, "%s_sum %.6f\n%s_count %llu\n", name,
				 (double)atomic_load_explicit(
					 &h->h_sum_us, memory_order_relaxed) /
					 1e6,
				 name, cum);
	return err;
}

#define HIST_RENDER(b, name, labels, h, bounds)                                \
	hist_render((b), (name), (labels), (h), (bounds), NELEM(bounds))

static unsigned long long
ld(const mctr *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/*
 * canon[i]: the first entry of t holding the same name as entry i (twins
 * are added up under it), or -1 for an entry not (yet) written.
 */
static void
name_canon(const struct m_name *t, int n, int *canon)
{
	int i, j;

	for (i = 0; i < n; i++) {
		canon[i] = -1;
		if (atomic_load_explicit(&t[i].n_state, memory_order_acquire) !=
		    NAME_READY)
			continue;
		canon[i] = i;
		for (j = 0; j < i; j++)
			if (canon[j] == j && t[j].n_hash == t[i].n_hash &&
			    strcmp(t[j].n_name, t[i].n_name) == 0) {
				canon[i] = j;
				break;
			}
	}
}

static enum cp_err
render_requests(const struct metrics_shm *m, struct buf *b)
{
	static const char *const name = "cerebras_proxy_requests_total";
	char code[8];
	enum cp_err err;
	int r, c;
	unsigned long long n;

	err = family(b, name, "counter",
		     "Requests answered, by route and HTTP status (499: the "
		     "client left before an answer).");
	for (r = 0; r < METRICS_NROUTES && !err; r++)
		for (c = 0; c < NCODES && !err; c++) {
			n = ld(&m->m_requests[r][c]);
			if (n == 0)
				continue;
			code_label(c, code, sizeof(code));
			err = buf_printf(b,
					 "%s{route=\"%s\",code=\"%s\"} %llu\n",
					 name, route_names[r], code, n);
		}
	return err;
}

static enum cp_err
render_upstream(const struct metrics_shm *m, int nkeys, struct buf *b)
{
	static const char *const name =
		"cerebras_proxy_upstream_requests_total";
	static const char *const lim =
		"cerebras_proxy_upstream_rate_limited_total";
	char code[8];
	enum cp_err err;
	int k, c;
	unsigned long long n;

	err = family(b, name, "counter",
		     "Requests sent upstream (every attempt, retries "
		     "included, and the models list's fetches), by API key "
		     "index and HTTP status (none: no answer).");
	for (k = 0; k < nkeys && !err; k++)
		for (c = 0; c < NCODES && !err; c++) {
			n = ld(&m->m_upstream[k][c]);
			if (n == 0)
				continue;
			code_label(c, code, sizeof(code));
			err = buf_printf(b, "%s{key=\"%d\",code=\"%s\"} %llu\n",
					 name, k, code, n);
		}
	if (!err)
		err = family(b, lim, "counter",
			     "Upstream 429 answers, by API key index and the "
			     "limit that ran out (unknown: the answer showed "
			     "none).");
	for (k = 0; k < nkeys && !err; k++)
		for (c = 0; c <= HDR_NLIMITS && !err; c++) {
			n = ld(&m->m_limited[k][c]);
			if (n == 0)
				continue;
			err = buf_printf(
				b, "%s{key=\"%d\",limit=\"%s\"} %llu\n", lim, k,
				c < HDR_NLIMITS ? hdr_limit_names[c]
						: "unknown",
				n);
		}
	return err;
}

/*
 * The samples of counters kept per interned name (rows[i], i < n, for
 * t[i]; rows[n] for "other"), by kind: head (the sample's name and labels
 * up to the name's value, its opening quote included), the name escaped,
 * the kind. Twins are added up under the first; zeros are left out.
 */
static enum cp_err
render_named(struct buf *b, const char *head, const struct m_name *t, int n,
	     const int *canon, const mctr (*rows)[2])
{
	unsigned long long v;
	enum cp_err err = CP_OK;
	int i, j, k;

	for (i = 0; i <= n && !err; i++) {
		if (i < n && canon[i] != i)
			continue;
		for (k = 0; k < 2 && !err; k++) {
			v = ld(&rows[i][k]);
			for (j = i + 1; i < n && j < n; j++)
				if (canon[j] == i)
					v += ld(&rows[j][k]);
			if (v == 0)
				continue;
			err = buf_adds(b, head);
			if (!err)
				err = metrics_escape(b, i < n ? t[i].n_name
							      : "other");
			if (!err)
				err = buf_printf(b, "\",kind=\"%s\"} %llu\n",
						 kind_names[k], v);
		}
	}
	return err;
}

static enum cp_err
render_tokens(const struct metrics_shm *m, int nkeys, struct buf *b)
{
	static const char *const name = "cerebras_proxy_tokens_total";
	static const char *const cname = "cerebras_proxy_client_tokens_total";
	int canon[METRICS_CLIENTS > METRICS_MODELS ? METRICS_CLIENTS
						   : METRICS_MODELS];
	char head[96];
	enum cp_err err;
	int k;

	err = family(b, name, "counter",
		     "Tokens the answers used (their usage), by API key "
		     "index, model (the first 32 seen, then other) and kind "
		     "(prompt, completion).");
	name_canon(m->m_models, METRICS_MODELS, canon);
	for (k = 0; k < nkeys && !err; k++) {
		snprintf(head, sizeof(head), "%s{key=\"%d\",model=\"", name, k);
		err = render_named(b, head, m->m_models, METRICS_MODELS, canon,
				   m->m_tokens[k]);
	}
	if (!err)
		err = family(b, cname, "counter",
			     "Tokens the answers used, by client (a token's "
			     "name, or an address without tokens; the first "
			     "64 seen, then other) and kind.");
	name_canon(m->m_clients, METRICS_CLIENTS, canon);
	snprintf(head, sizeof(head), "%s{client=\"", cname);
	if (!err)
		err = render_named(b, head, m->m_clients, METRICS_CLIENTS,
				   canon, m->m_client_tokens);
	return err;
}

static unsigned long long
hist_count(const struct m_hist *h)
{
	unsigned long long n = 0;
	size_t i;

	for (i = 0; i < NELEM(h->h_n); i++)
		n += ld(&h->h_n[i]);
	return n;
}

static enum cp_err
render_histograms(const struct metrics_shm *m, struct buf *b)
{
	static const char *const dur =
		"cerebras_proxy_request_duration_seconds";
	static const char *const q = "cerebras_proxy_queue_wait_seconds";
	static const char *const ttfb =
		"cerebras_proxy_upstream_time_to_first_byte_seconds";
	static const char *const late = "cerebras_proxy_slot_lateness_seconds";
	char labels[32];
	enum cp_err err;
	int r;

	err = family(b, dur, "histogram",
		     "Time from the accept to the end of the answer, by "
		     "route.");
	/* Routes not seen yet are left out (23 lines each). */
	for (r = 0; r < METRICS_NROUTES && !err; r++) {
		if (hist_count(&m->m_duration[r]) == 0)
			continue;
		snprintf(labels, sizeof(labels), "route=\"%s\",",
			 route_names[r]);
		err = HIST_RENDER(b, dur, labels, &m->m_duration[r], dur_us);
	}
	if (!err)
		err = family(b, q, "histogram",
			     "Time a request waited, from the accept until it "
			     "was first sent upstream (thread, scheduler and "
			     "its slot).");
	if (!err)
		err = HIST_RENDER(b, q, "", &m->m_queue, queue_us);
	if (!err)
		err = family(b, ttfb, "histogram",
			     "Time from sending an attempt upstream to the "
			     "first byte of its answer.");
	if (!err)
		err = HIST_RENDER(b, ttfb, "", &m->m_ttfb, ttfb_us);
	if (!err)
		err = family(b, late, "histogram",
			     "How late an attempt left after its slot's time.");
	if (!err)
		err = HIST_RENDER(b, late, "", &m->m_late, late_us);
	return err;
}

static enum cp_err
render_gauges(const struct metrics_shm *m, struct buf *b)
{
	long long inflight = 0, streams = 0;
	const struct m_proc *p;
	int i, pid;

	for (i = 0; i <= METRICS_PROCS; i++) {
		p = &m->m_procs[i];
		pid = atomic_load(&p->p_pid);
		if (i < METRICS_PROCS && (pid <= 0 || !pid_alive(pid)))
			continue;
		inflight += atomic_load(&p->p_inflight);
		streams += atomic_load(&p->p_streams);
	}
	return buf_printf(
		b,
		"# HELP cerebras_proxy_requests_in_flight Requests being "
		"handled by a worker thread of the host's live processes (a "
		"scrape counts itself).\n"
		"# TYPE cerebras_proxy_requests_in_flight gauge\n"
		"cerebras_proxy_requests_in_flight %lld\n"
		"# HELP cerebras_proxy_streams_open Event streams being "
		"relayed to clients.\n"
		"# TYPE cerebras_proxy_streams_open gauge\n"
		"cerebras_proxy_streams_open %lld\n",
		inflight < 0 ? 0 : inflight, streams < 0 ? 0 : streams);
}

static enum cp_err
render_view(const struct config *cfg, const struct sched_view *v, struct buf *b)
{
	static const char *const states[] = {"ok", "resting", "disabled"};
	static const char *const bname = "cerebras_proxy_budget_remaining";
	static const char *const cname = "cerebras_proxy_budget_capacity";
	const struct sched_budget_view *bv;
	enum cp_err err;
	int k, s, i, pass;

	err = buf_printf(
		b,
		"# HELP cerebras_proxy_redis_up 1 if Redis answered this "
		"scrape's look at the scheduler, else 0 (also without "
		"Redis: REDIS_URL=none).\n"
		"# TYPE cerebras_proxy_redis_up gauge\n"
		"cerebras_proxy_redis_up %d\n",
		v != NULL && v->sv_redis_up ? 1 : 0);
	if (err || v == NULL)
		return err;
	err = buf_printf(
		b,
		"# HELP cerebras_proxy_fallback_active 1 while requests are "
		"scheduled per host (Redis out of reach, "
		"REDIS_FALLBACK=local).\n"
		"# TYPE cerebras_proxy_fallback_active gauge\n"
		"cerebras_proxy_fallback_active %d\n"
		"# HELP cerebras_proxy_schedule_depth_seconds How far ahead "
		"the last booked slot is.\n"
		"# TYPE cerebras_proxy_schedule_depth_seconds gauge\n"
		"cerebras_proxy_schedule_depth_seconds %.3f\n",
		v->sv_fallback ? 1 : 0,
		(double)(v->sv_depth_ms > 0 ? v->sv_depth_ms : 0) / 1e3);
	if (!err)
		err = family(b, "cerebras_proxy_key_state", "gauge",
			     "1 for the state each API key (by index) is in: "
			     "ok, resting (after a 429) or disabled (after a "
			     "401/403); 0 for the others.");
	for (k = 0; k < v->sv_nkeys && k < cfg->nkeys && !err; k++)
		for (s = 0; s < 3 && !err; s++)
			err = buf_printf(b,
					 "cerebras_proxy_key_state{key=\"%d\","
					 "state=\"%s\"} %d\n",
					 k, states[s],
					 (int)v->sv_keys[k].kv_state == s);
	if (!err)
		err = family(b, "cerebras_proxy_key_rest_seconds", "gauge",
			     "How long until a resting or disabled API key "
			     "is used again; 0 when usable.");
	for (k = 0; k < v->sv_nkeys && k < cfg->nkeys && !err; k++)
		err = buf_printf(b,
				 "cerebras_proxy_key_rest_seconds{key=\"%d\"} "
				 "%.3f\n",
				 k,
				 (double)(v->sv_keys[k].kv_until_ms > 0
						  ? v->sv_keys[k].kv_until_ms
						  : 0) /
					 1e3);
	for (pass = 0; pass < 2 && !err; pass++) {
		err = family(
			b, pass == 0 ? bname : cname, "gauge",
			pass == 0 ? "What the scheduler learned is left of an "
				    "organisation's limit for a model "
				    "(requests or tokens, as the limit "
				    "says)."
				  : "An organisation's limit for a model "
				    "(requests or tokens, as the limit says).");
		for (i = 0;
		     i < v->sv_nbudgets && i < SCHED_VIEW_BUDGETS && !err;
		     i++) {
			bv = &v->sv_budgets[i];
			if (bv->bv_org < 0 || bv->bv_org >= cfg->norgs ||
			    bv->bv_limit < 0 || bv->bv_limit >= HDR_NLIMITS)
				continue;
			err = buf_printf(b, "%s{org=\"%s\",model=\"",
					 pass == 0 ? bname : cname,
					 cfg->org_fps[bv->bv_org]);
			if (!err)
				err = metrics_escape(b, bv->bv_model);
			if (!err)
				err = buf_printf(b, "\",limit=\"%s\"} %lld\n",
						 hdr_limit_names[bv->bv_limit],
						 pass == 0 ? bv->bv_level
							   : bv->bv_cap);
		}
	}
	return err;
}

enum cp_err
metrics_render(const struct config *cfg, const struct sched_view *v,
	       struct buf *out)
{
	const struct metrics_shm *m =
		atomic_load_explicit(&m_shm, memory_order_acquire);
	int nkeys = cfg->nkeys < CONFIG_MAX_KEYS ? cfg->nkeys : CONFIG_MAX_KEYS;
	enum cp_err err;

	if (m == NULL)
		return CP_ERR_IO;
	err = render_requests(m, out);
	if (!err)
		err = render_upstream(m, nkeys, out);
	if (!err)
		err = render_tokens(m, nkeys, out);
	if (!err)
		err = render_histograms(m, out);
	if (!err)
		err = render_gauges(m, out);
	if (!err)
		err = render_view(cfg, v, out);
	return err;
}

void
metrics_handle(struct worker *w, const struct request_io *io, struct resp *r)
{
	const struct config *cfg = w->w_cfg;
	const char *remote = io->io_param(io->io_ctx, "REMOTE_ADDR");
	const char *xff = io->io_param(io->io_ctx, "HTTP_X_FORWARDED_FOR");
	const char *fwd = io->io_param(io->io_ctx, "HTTP_FORWARDED");
	struct sched_view *v = NULL;
	struct buf out;
	char ip[64];
	enum cp_err err;

	/*
	 * The scraper's address as the clients' (through TRUSTED_PROXIES).
	 * A request that came through a proxy not among them is refused: a
	 * reverse proxy on the same host (cloudflared, caddy) would make
	 * anyone on the internet look like 127.0.0.1.
	 */
	clients_address(cfg, remote, xff, ip, sizeof(ip));
	if (((xff != NULL || fwd != NULL) &&
	     (remote == NULL || !config_trusted(cfg, remote))) ||
	    !config_metrics_allowed(cfg, ip)) {
		resp_error(r, 403, "invalid_request_error",
			   "metrics_not_allowed",
			   "GET /metrics is open only to the addresses in "
			   "METRICS_ALLOW (and not through a proxy outside "
			   "TRUSTED_PROXIES)",
			   NULL);
		return;
	}
	if (atomic_load_explicit(&m_shm, memory_order_acquire) == NULL) {
		resp_error(r, 503, "service_unavailable", "metrics_unavailable",
			   "this worker could not map the host's metrics; see "
			   "its log",
			   NULL);
		return;
	}
	buf_init(&out, METRICS_TEXT_MAX);
	v = calloc(1, sizeof(*v));
	if (v != NULL)
		v->sv_keys = calloc((size_t)cfg->nkeys, sizeof(*v->sv_keys));
	if (v == NULL || v->sv_keys == NULL) {
		err = CP_ERR_NOMEM;
		goto fail;
	}
	v->sv_nkeys = cfg->nkeys;
	err = metrics_render(
		cfg, sched_inspect(&w->w_sched, v) == CP_OK ? v : NULL, &out);
	if (err)
		goto fail;
	if (resp_begin(r, 200, "text/plain; version=0.0.4; charset=utf-8",
		       "Cache-Control: no-store\r\n") == CP_OK)
		(void)resp_write(r, out.b_p, out.b_len);
	goto done;
fail:
	log_warnx("GET /metrics: %s", cp_strerror(err));
	resp_error(r, 500, "server_error", "metrics_failed",
		   "the metrics could not be rendered; see the log", NULL);
done:
	if (v != NULL)
		free(v->sv_keys);
	free(v);
	buf_free(&out);
}
