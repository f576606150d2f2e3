/*
 * sched_local.c - per-host scheduling state in shared memory: reserve.lua
 * and settle.lua, step for step, on CLOCK_MONOTONIC (ns).
 *
 * Where Redis keeps hashes and sorted sets, the state here is fixed
 * tables: a budget table looked up by (organisation, model), its least
 * recently used entry reused when full (that budget is forgotten and
 * probes again), and sorted arrays for the timelines (the global one,
 * and one per key). A full timeline answers SLOT_TOO_FAR instead of
 * growing. Clients' rate buckets and seats are a table of the same kind
 * (the least recently used client forgotten), each with a bounded list
 * of seats. Everything is computed under a spin lock with no system
 * call and no allocation; what needs neither the state nor the lock (the
 * model's and client's hashes, the declared limits, the answer's
 * headers) is prepared before it.
 */
#include "sched_local.h"

#include "headers.h"
#include "log.h"
#include "sched_redis.h" /* SCHED_SEAT_LEASE_MS, sched_client_limited */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * Bump when the layout changes: the name changes with it, so workers of
 * an older build on the same host never map a state they misread.
 */
#define STATE_LAYOUT "6"

#define MS_NS  1000000LL
#define DAY_NS (86400LL * 1000 * MS_NS)

/* Budgets kept: more (organisation, model) pairs than a host sees. */
#define BUDGETS 256
/*
 * Clients kept (their rate buckets and seats), the least recently used
 * forgotten when a new one is needed (its bucket full again, its seats
 * gone); and seats kept per client: a client's concurrency limit is at
 * most this on the per-host scheduler.
 */
#define CLIENTS 256
#define SEATS	64
/* A client's seats expire a lease after they were last taken (zset). */
#define LEASE_NS ((int64_t)SCHED_SEAT_LEASE_MS * MS_NS)
/* Redis keeps a client's keys this long past a window or a lease. */
#define CLIENT_KEEP_NS (1000 * MS_NS)
/* settle.lua's ring of recent give-backs (r0..r15). */
#define RING 16
/* Model names are compared on this many bytes and their whole hash. */
#define MODEL_MAX 127
/*
 * Booked slots kept, pruned of those older than a gap: the global
 * timeline holds a 30 s queue at 4 ms spacing, each key's a 30 s queue
 * at 120 ms (RATE_LIMIT_INTERVAL_MS defaults to 200, QUEUE_MAX_WAIT_MS to
 * 30000); pages never touched cost no memory.
 */
#define GLOBAL_SLOTS SCHED_LOCAL_SLOTS
#define KEY_SLOTS    SCHED_LOCAL_KEY_SLOTS
/* How often a request asks again while a probe is out (SCHED_POLL_US). */
#define POLL_NS (50 * MS_NS)
/*
 * While tokens still out may come back: a wait longer than this is not
 * booked, and is asked again after a quarter of it, 4 to 40 polls.
 */
#define SOFT_POLL_NS (4 * POLL_NS)
/*
 * An empty time this far back is a full bucket ("never charged"); empty
 * times are kept within +-E_FAR so their arithmetic cannot overflow.
 */
#define E_FAR (INT64_C(1) << 61)

/* The windows of the six limits, in budget order (hdr_limit_names). */
static const int64_t window_ns[CONFIG_NLIMITS] = {
	60 * 1000 * MS_NS,
	60 * 1000 * MS_NS,
	3600 * 1000 * MS_NS,
	3600 * 1000 * MS_NS,
	DAY_NS,
	DAY_NS,
};

/* Limits 0, 2, 4 count requests; 1, 3, 5 tokens. */
#define LIMIT_TOKENS(l) ((l) % 2 == 1)

/*
 * One organisation's budgets for one model: the fields of settle.lua's
 * hash. An entry is absent (free) once b_expire_ns has passed, as the
 * hash would have expired.
 */
struct budget {
	int64_t b_expire_ns; /* 0: never used */
	int64_t b_used_ns;   /* last looked up: the least recent is reused */
	uint64_t b_hash;     /* of the whole model name */
	int32_t b_org;	     /* organisation index (config.key_org) */
	char b_org_fp[9];    /* and its fingerprint, in case configs differ */
	char b_model[MODEL_MAX + 1];
	int32_t b_seen;		     /* an answer was read */
	int64_t b_p;		     /* a probe holds it until */
	int64_t b_x;		     /* rests (429, no limit spent) until */
	int64_t b_k[CONFIG_NLIMITS]; /* capacity announced, 0: none */
	int64_t b_e[CONFIG_NLIMITS]; /* empty time (level 0) */
	int64_t b_cq, b_ct, b_rt;    /* requests, tokens charged; given back */
	int64_t b_ot; /* tokens charged to requests not settled yet */
	/* settle.lua's r<i>: (time, rt) after recent usage give-backs. */
	int64_t b_ring_t[RING];
	int64_t b_ring_rt[RING];
	int64_t b_ri; /* give-backs so far: entry ri % RING is the latest */
};

/* A request in flight: reserve.lua's member of <prefix>:cf:<client>. */
struct seat {
	int64_t se_till_ns; /* the end of its lease */
	uint64_t se_id;	    /* its sr_seat, hashed */
};

/*
 * A client's rate bucket and seats (reserve.lua's <prefix>:c:<client>
 * and :cf:<client>). Absent (free) once both have expired.
 */
struct client {
	int64_t c_used_ns; /* last looked up: the least recent is reused */
	uint64_t c_hash;   /* of its whole id */
	char c_id[SCHED_CLIENT_ID_MAX + 1];
	int64_t c_e_expire_ns;	   /* the bucket: absent (full) from then */
	int64_t c_e;		   /* its empty time */
	int64_t c_seats_expire_ns; /* the seats: absent from then */
	int32_t c_nseats;
	struct seat c_seats[SEATS];
};

/*
 * What a key's answers said (settle.lua's r<i>, s<i> and the day's
 * counters; rest.lua's d<i>), for sched_local_inspect.
 */
struct key_stat {
	int64_t ks_disabled_ns; /* a disablement ends (0: none) */
	int64_t ks_cool_ns;	/* after a 429: its budget admits again */
	int64_t ks_day;		/* the UTC day of the two counts */
	int64_t ks_requests;	/* sent on the key that day */
	int64_t ks_tokens;	/* their usage */
	int32_t ks_status;	/* the last upstream status, 0: none yet */
};

/* Times are CLOCK_MONOTONIC ns; 0 means "never set". */
struct sched_local_state {
	/* 0 when free, else the holder's pid (for a dead holder: see lock) */
	_Atomic int32_t st_lock;
	int32_t st_nslots;			 /* entries of st_slots */
	int64_t st_rr;				 /* round-robin position */
	int64_t st_key_rest_ns[CONFIG_MAX_KEYS]; /* reserve.lua's c<i> */
	int64_t st_slots[GLOBAL_SLOTS];		 /* booked, ascending */
	/* The per-key timelines: key i's booked slots, ascending. */
	int32_t st_nkslots[CONFIG_MAX_KEYS];
	int64_t st_kslots[CONFIG_MAX_KEYS][KEY_SLOTS];
	struct budget st_budgets[BUDGETS];
	struct client st_clients[CLIENTS];
	struct key_stat st_key_stats[CONFIG_MAX_KEYS];
	struct clock_sync st_clock; /* Redis' clock on the host's */
};

/* A holder that keeps the lock this long is checked for being alive. */
#define LOCK_STALE_SPINS 100000

/*
 * The lock is held briefly and the holder makes no system call
 * meanwhile, so waiters spin (yielding the CPU). A reservation took 0.5
 * us on average with 4 keys at the default 200 ms spacing, 4 us with a
 * 3000-slot queue (10 ms spacing), 16-40 us with 256 keys of 256
 * organisations in key scope (20000 reservations each on a fake clock,
 * -O2, x86-64). A process killed while holding it (SIGKILL in those
 * microseconds) would block its host for good: a waiter that has spun
 * long takes the lock over once the holder's pid is gone. The counts
 * are checked on use (tl_open), so a holder killed mid-update leaves a
 * state that is stale, never out of bounds.
 */
static void
state_lock(struct sched_local_state *st)
{
	int32_t me = (int32_t)getpid();
	int32_t cur;
	long spins = 0;

	for (;;) {
		cur = 0;
		if (atomic_compare_exchange_weak(&st->st_lock, &cur, me))
			return;
		if (++spins % LOCK_STALE_SPINS == 0 && cur != 0 &&
		    kill((pid_t)cur, 0) != 0 && errno == ESRCH &&
		    atomic_compare_exchange_strong(&st->st_lock, &cur, me))
			return;
		(void)sched_yield();
	}
}

static void
state_unlock(struct sched_local_state *st)
{
	atomic_store(&st->st_lock, 0);
}

void
sched_local_name_for(const struct config *cfg, const char *kind,
		     const char *tail, char *out, size_t outsz)
{
	char id[600];
	char fp[9];

	snprintf(id, sizeof(id), "%s\n%s\n%s", STATE_LAYOUT, cfg->redis_prefix,
		 cfg->redis_enabled ? cfg->redis_url : "none");
	key_fingerprint(id, fp);
	snprintf(out, outsz, "/cerebras-proxy-%s%s%s-%ld", kind, fp, tail,
		 (long)geteuid());
}

void
sched_local_name(const struct config *cfg, char *out, size_t outsz)
{
	sched_local_name_for(cfg, "", "", out, outsz);
}

size_t
sched_local_size(void)
{
	return sizeof(struct sched_local_state);
}

enum cp_err
sched_local_open(struct sched_local *l, const struct config *cfg, char *errbuf,
		 size_t errsz)
{
	char name[64];
	void *p;

	memset(l, 0, sizeof(*l));
	l->sl_cfg = cfg;
	l->sl_now = mono_ns;
	sched_local_name(cfg, name, sizeof(name));
	/*
	 * Populated now, so no page fault (a few microseconds each, ~250
	 * pages) lands inside the lock later.
	 */
	p = shm_map_private(name, sizeof(struct sched_local_state), errbuf,
			    errsz);
	if (p == NULL)
		return CP_ERR_IO;
	l->sl_state = p;
	return CP_OK;
}

void
sched_local_close(struct sched_local *l)
{
	if (l->sl_state != NULL)
		(void)munmap(l->sl_state, sizeof(struct sched_local_state));
	l->sl_state = NULL;
}

/* --- bucket arithmetic ------------------------------------------------ */

/* ceil(d), within +-2^62 (libm-free; the scripts' math.ceil). */
static int64_t
ceil_ns(double d)
{
	int64_t i;

	if (d >= 0x1p62)
		return INT64_C(1) << 62;
	if (d <= -0x1p62)
		return -(INT64_C(1) << 62);
	i = (int64_t)d;
	if ((double)i < d)
		i++;
	return i;
}

/*
 * ceil(e + d) for an empty time e, kept within +-E_FAR: as far back,
 * the bucket is full at any time the host will see; as far ahead, it
 * never refills.
 */
static int64_t
e_add(int64_t e, double d)
{
	int64_t r = e + ceil_ns(d);

	return r < -E_FAR ? -E_FAR : r > E_FAR ? E_FAR : r;
}

/* What refilling c of a bucket of capacity cap takes (ns, unrounded). */
static double
refill_ns(int l, long long c, long long cap)
{
	return (double)c * (double)window_ns[l] / (double)cap;
}

/* A request's charge to limit l: 1 request or its tokens, at most cap. */
static long long
charge(int l, long long tokens, long long cap)
{
	long long c = LIMIT_TOKENS(l) ? tokens : 1;

	return c > cap ? cap : c;
}

/* --- the budget table ------------------------------------------------- */

/* What a reservation or settlement asks, prepared outside the lock. */
struct ask {
	const char *a_model; /* borrowed: the request's model */
	uint64_t a_hash;     /* FNV-1a of the whole of it */
	long long a_tokens;
	long long a_declared[CONFIG_NLIMITS];
};

/* FNV-1a of the first n bytes of s (up to its end). */
static uint64_t
fnv1a(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	uint64_t h = 14695981039346656037ULL;
	size_t i;

	for (i = 0; i < n && p[i]; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static void
ask_init(struct ask *a, const struct config *cfg,
	 const struct sched_request *rq)
{
	a->a_model = rq != NULL && rq->sr_model != NULL ? rq->sr_model : "";
	a->a_tokens = rq != NULL ? rq->sr_tokens : 0;
	a->a_hash = fnv1a(a->a_model, SIZE_MAX);
	config_declared(cfg, a->a_model, a->a_declared);
}

/* 1 if b is org's live budget for a's model at now. */
static int
budget_is(const struct budget *b, const struct config *cfg, int org,
	  const struct ask *a, int64_t now)
{
	return b->b_expire_ns > now && b->b_hash == a->a_hash &&
	       b->b_org == org &&
	       memcmp(b->b_org_fp, cfg->org_fps[org], 9) == 0 &&
	       strncmp(b->b_model, a->a_model, MODEL_MAX) == 0;
}

/* org's budget for a's model (last use: now), or NULL if absent. */
static struct budget *
budget_find(struct sched_local_state *st, const struct config *cfg, int org,
	    const struct ask *a, int64_t now)
{
	int j;

	for (j = 0; j < BUDGETS; j++) {
		if (budget_is(&st->st_budgets[j], cfg, org, a, now)) {
			st->st_budgets[j].b_used_ns = now;
			return &st->st_budgets[j];
		}
	}
	return NULL;
}

/*
 * A fresh budget for org and a's model, as an absent hash reads: every
 * bucket full, nothing seen. Takes an expired entry, else the least
 * recently used one, which is forgotten.
 */
static struct budget *
budget_new(struct sched_local_state *st, const struct config *cfg, int org,
	   const struct ask *a, int64_t now)
{
	struct budget *b = &st->st_budgets[0];
	int l;
	int j;

	for (j = 0; j < BUDGETS; j++) {
		if (st->st_budgets[j].b_expire_ns <= now) {
			b = &st->st_budgets[j];
			break;
		}
		if (st->st_budgets[j].b_used_ns < b->b_used_ns)
			b = &st->st_budgets[j];
	}
	memset(b, 0, sizeof(*b));
	b->b_used_ns = now;
	b->b_expire_ns = now + DAY_NS;
	b->b_hash = a->a_hash;
	b->b_org = org;
	memcpy(b->b_org_fp, cfg->org_fps[org], 9);
	memcpy(b->b_model, a->a_model, strnlen(a->a_model, MODEL_MAX));
	for (l = 0; l < CONFIG_NLIMITS; l++)
		b->b_e[l] = -E_FAR;
	return b;
}

/* --- the client table (reserve.lua's client keys) --------------------- */

/* A request's client limits, prepared outside the lock. */
struct client_ask {
	int ca_on;	   /* 0: no client limit (sr_client NULL or none) */
	const char *ca_id; /* borrowed: sc_id */
	uint64_t ca_hash;  /* of the whole id */
	long long ca_rate; /* requests per window, 0: none */
	int64_t ca_window_ns;
	long long ca_conc; /* in flight at once, 0: none; at most SEATS */
	uint64_t ca_seat;  /* sr_seat, hashed */
	int ca_attempt;
};

static void
client_ask_init(struct client_ask *ca, const struct sched_request *rq)
{
	const struct sched_client *c = rq != NULL ? rq->sr_client : NULL;

	memset(ca, 0, sizeof(*ca));
	if (!sched_client_limited(c))
		return;
	ca->ca_on = 1;
	ca->ca_id = c->sc_id != NULL ? c->sc_id : "";
	ca->ca_hash = fnv1a(ca->ca_id, SIZE_MAX);
	if (c->sc_rate > 0 && c->sc_window_ms > 0) {
		ca->ca_rate = c->sc_rate;
		ca->ca_window_ns = (int64_t)c->sc_window_ms * MS_NS;
	}
	if (c->sc_concurrent > 0)
		ca->ca_conc =
			c->sc_concurrent < SEATS ? c->sc_concurrent : SEATS;
	ca->ca_seat = fnv1a(rq->sr_seat, sizeof(rq->sr_seat) - 1);
	ca->ca_attempt = rq->sr_attempt;
}

/* 1 while c holds a bucket or seats (one of its keys has not expired). */
static int
client_live(const struct client *c, int64_t now)
{
	return c->c_e_expire_ns > now ||
	       (c->c_nseats > 0 && c->c_seats_expire_ns > now);
}

/* ca's client (last use: now), or NULL if absent. */
static struct client *
client_find(struct sched_local_state *st, const struct client_ask *ca,
	    int64_t now)
{
	struct client *c;
	int j;

	for (j = 0; j < CLIENTS; j++) {
		c = &st->st_clients[j];
		if (c->c_hash == ca->ca_hash && client_live(c, now) &&
		    strncmp(c->c_id, ca->ca_id, SCHED_CLIENT_ID_MAX) == 0) {
			c->c_used_ns = now;
			return c;
		}
	}
	return NULL;
}

/*
 * A fresh entry for ca's client, as absent keys read: bucket full, no
 * seat. Takes a free entry, else the least recently used one, which is
 * forgotten.
 */
static struct client *
client_new(struct sched_local_state *st, const struct client_ask *ca,
	   int64_t now)
{
	struct client *c = &st->st_clients[0];
	int j;

	for (j = 0; j < CLIENTS; j++) {
		if (!client_live(&st->st_clients[j], now)) {
			c = &st->st_clients[j];
			break;
		}
		if (st->st_clients[j].c_used_ns < c->c_used_ns)
			c = &st->st_clients[j];
	}
	memset(c, 0, sizeof(*c));
	c->c_used_ns = now;
	c->c_hash = ca->ca_hash;
	memcpy(c->c_id, ca->ca_id, strnlen(ca->ca_id, SCHED_CLIENT_ID_MAX));
	return c;
}

/*
 * ZREMRANGEBYSCORE -inf now: drops the seats whose lease has ended (all
 * of them once the set has expired). The count is checked on use, as
 * the timelines' are.
 */
static void
seats_prune(struct client *c, int64_t now)
{
	int n = 0;
	int i;

	if (c->c_nseats < 0 || c->c_nseats > SEATS ||
	    c->c_seats_expire_ns <= now)
		c->c_nseats = 0;
	for (i = 0; i < c->c_nseats; i++)
		if (c->c_seats[i].se_till_ns > now)
			c->c_seats[n++] = c->c_seats[i];
	c->c_nseats = n;
}

/* The index of seat id among c's, or -1. */
static int
seat_find(const struct client *c, uint64_t id)
{
	int i;

	for (i = 0; i < c->c_nseats; i++)
		if (c->c_seats[i].se_id == id)
			return i;
	return -1;
}

/* The bucket's empty time at now, an absent or long idle one full. */
static int64_t
client_e(const struct client *c, const struct client_ask *ca, int64_t now)
{
	int64_t e = c != NULL && c->c_e_expire_ns > now ? c->c_e : -E_FAR;

	return e < now - ca->ca_window_ns ? now - ca->ca_window_ns : e;
}

/*
 * reserve.lua's first step: 1 if the request is over its client's rate
 * (a first attempt, when the bucket lacks a request) or concurrency (a
 * request without a seat when all are taken), out saying which and
 * until when, nothing booked; else 0, *clp its client (NULL: absent).
 */
static int
client_check(struct sched_local_state *st, const struct client_ask *ca,
	     int64_t now, struct client **clp, struct slot *out)
{
	struct client *c;
	int64_t at;

	*clp = NULL;
	if (!ca->ca_on)
		return 0;
	c = client_find(st, ca, now);
	*clp = c;
	if (ca->ca_rate > 0 && ca->ca_attempt == 0) {
		at = e_add(client_e(c, ca, now),
			   (double)ca->ca_window_ns / (double)ca->ca_rate);
		if (at > now) {
			/* Whole microseconds, as the script's, rounded up. */
			at = (at + 999) / 1000 * 1000;
			out->s_key = SLOT_CLIENT;
			out->s_why = SLOT_WHY_CLIENT_RATE;
			out->s_wait_us = (at - now + 999) / 1000;
			out->s_at_us = at / 1000;
			out->s_deadline_ns = at;
			return 1;
		}
	}
	if (ca->ca_conc > 0 && c != NULL) {
		seats_prune(c, now);
		if (seat_find(c, ca->ca_seat) < 0 &&
		    c->c_nseats >= ca->ca_conc) {
			out->s_key = SLOT_CLIENT;
			out->s_why = SLOT_WHY_CLIENT_CONC;
			out->s_wait_us = 1000000;
			out->s_at_us = (now + 1000 * MS_NS) / 1000;
			out->s_deadline_ns = now + 1000 * MS_NS;
			return 1;
		}
	}
	return 0;
}

/*
 * reserve.lua's seated(): after a reservation (key >= 0) or a poll, the
 * request (re)takes its seat for a lease; a first attempt's reservation
 * is charged to the bucket. A refusal writes nothing. c: client_check's.
 */
static void
client_keep(struct sched_local_state *st, const struct client_ask *ca,
	    struct client *c, int64_t now, int key)
{
	int charge_it = key >= 0 && ca->ca_rate > 0 && ca->ca_attempt == 0;
	int i;

	if (!ca->ca_on || (key < 0 && key != SLOT_POLL) ||
	    (ca->ca_conc <= 0 && !charge_it))
		return;
	if (c == NULL)
		c = client_new(st, ca, now);
	if (ca->ca_conc > 0) {
		seats_prune(c, now);
		i = seat_find(c, ca->ca_seat);
		if (i < 0 && c->c_nseats < SEATS)
			i = c->c_nseats++;
		if (i >= 0) {
			c->c_seats[i].se_id = ca->ca_seat;
			c->c_seats[i].se_till_ns = now + LEASE_NS;
		}
		c->c_seats_expire_ns = now + LEASE_NS + CLIENT_KEEP_NS;
	}
	if (charge_it) {
		c->c_e = e_add(client_e(c, ca, now),
			       (double)ca->ca_window_ns / (double)ca->ca_rate);
		c->c_e_expire_ns = now + ca->ca_window_ns + CLIENT_KEEP_NS;
	}
}

void
sched_local_client_done(struct sched_local *l, const struct sched_request *rq)
{
	struct sched_local_state *st = l->sl_state;
	struct client_ask ca;
	struct client *c;
	int i;

	client_ask_init(&ca, rq);
	if (st == NULL || ca.ca_conc <= 0)
		return;
	state_lock(st);
	c = client_find(st, &ca, l->sl_now());
	if (c != NULL) {
		if (c->c_nseats < 0 || c->c_nseats > SEATS)
			c->c_nseats = 0;
		i = seat_find(c, ca.ca_seat);
		if (i >= 0)
			c->c_seats[i] = c->c_seats[--c->c_nseats];
	}
	state_unlock(st);
}

/* --- the timelines ---------------------------------------------------- */

/* A timeline: a set of booked slots, ascending (a sorted set's scores). */
struct timeline {
	int64_t *tl_at;
	int32_t *tl_n;
	int tl_max;
};

/* The global timeline, or key's; a count out of bounds is reset. */
static struct timeline
tl_open(struct sched_local_state *st, int key)
{
	struct timeline t;

	if (key < 0) {
		t.tl_at = st->st_slots;
		t.tl_n = &st->st_nslots;
		t.tl_max = GLOBAL_SLOTS;
	} else {
		t.tl_at = st->st_kslots[key];
		t.tl_n = &st->st_nkslots[key];
		t.tl_max = KEY_SLOTS;
	}
	if (*t.tl_n < 0 || *t.tl_n > t.tl_max)
		*t.tl_n = 0;
	return t;
}

/* The first index whose slot is after v. */
static int
tl_after(const struct timeline *t, int64_t v)
{
	int lo = 0;
	int hi = *t->tl_n;
	int mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (t->tl_at[mid] <= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * reserve.lua's fit: the first moment from at that is g away from every
 * slot booked up to hi.
 */
static int64_t
tl_fit(const struct timeline *t, int64_t at, int64_t g, int64_t hi)
{
	int64_t s;
	int j;

	if (g <= 0)
		return at;
	for (j = tl_after(t, at - g); j < *t->tl_n; j++) {
		s = t->tl_at[j];
		if (s > hi || s >= at + g)
			break;
		if (s > at - g)
			at = s + g;
	}
	return at;
}

/* ZREMRANGEBYSCORE -inf upto. */
static void
tl_prune(struct timeline *t, int64_t upto)
{
	int n = tl_after(t, upto);

	if (n == 0)
		return;
	memmove(t->tl_at, t->tl_at + n,
		(size_t)(*t->tl_n - n) * sizeof(t->tl_at[0]));
	*t->tl_n -= n;
}

/* 1 if at can be booked: already there, or room for it. */
static int
tl_room(const struct timeline *t, int64_t at)
{
	int j = tl_after(t, at);

	return *t->tl_n < t->tl_max || (j > 0 && t->tl_at[j - 1] == at);
}

/* ZADD: books at (a set: once); tl_room said yes. */
static void
tl_add(struct timeline *t, int64_t at)
{
	int j = tl_after(t, at);

	if ((j > 0 && t->tl_at[j - 1] == at) || *t->tl_n >= t->tl_max)
		return;
	memmove(t->tl_at + j + 1, t->tl_at + j,
		(size_t)(*t->tl_n - j) * sizeof(t->tl_at[0]));
	t->tl_at[j] = at;
	(*t->tl_n)++;
}

/* ZREM. */
static void
tl_remove(struct timeline *t, int64_t at)
{
	int j = tl_after(t, at);

	if (j == 0 || t->tl_at[j - 1] != at)
		return;
	memmove(t->tl_at + j - 1, t->tl_at + j,
		(size_t)(*t->tl_n - j) * sizeof(t->tl_at[0]));
	(*t->tl_n)--;
}

/* --- reserve.lua ------------------------------------------------------ */

/* One organisation's budgets as this reservation sees them. */
struct org_view {
	int64_t ov_ready;	/* when they admit the request */
	struct budget *ov_b;	/* NULL: absent */
	signed char ov_why;	/* what sets ov_ready (SLOT_WHY_*, a limit) */
	unsigned char ov_done;	/* looked at */
	unsigned char ov_probe; /* unknown: this request would probe */
	unsigned char ov_busy;	/* unknown, and a probe is out */
	unsigned char ov_soft;	/* waits for tokens still out: ask again */
};

/* The parameters and memo of one reservation. */
struct resv {
	struct sched_local_state *r_st;
	const struct config *r_cfg;
	const struct ask *r_ask;
	int64_t r_now;
	int64_t r_iv;	/* interval (per key in key scope) */
	int64_t r_gap;	/* global spacing: interval, or the floor */
	int64_t r_maxw; /* longest acceptable wait */
	int r_perkey;	/* key scope with an interval: per-key timelines */
	struct timeline r_global;
	int64_t r_memo_at; /* global scope: the last place() */
	int64_t r_memo_slot;
	int r_memo;
};

/*
 * Finds the request's model's budgets of every organisation, in one pass
 * over the table (instead of one per organisation).
 */
static void
org_find(struct resv *r, struct org_view *views)
{
	const struct config *c = r->r_cfg;
	struct budget *b;
	int j;

	for (j = 0; j < BUDGETS; j++) {
		b = &r->r_st->st_budgets[j];
		if (b->b_org >= 0 && b->b_org < c->norgs &&
		    budget_is(b, c, b->b_org, r->r_ask, r->r_now))
			views[b->b_org].ov_b = b;
	}
}

/* reserve.lua's budget(o): when org's budgets admit the request. */
static void
org_look(struct resv *r, struct org_view *v)
{
	const struct ask *a = r->r_ask;
	struct budget *b = v->ov_b;
	int known = b != NULL && b->b_seen;
	long long cap;
	long long c;
	double level;
	int64_t at;
	int64_t e;
	int l;

	v->ov_done = 1;
	if (b != NULL)
		b->b_used_ns = r->r_now;
	v->ov_ready = r->r_now;
	v->ov_why = SLOT_WHY_NONE;
	if (b != NULL && b->b_x > r->r_now) {
		v->ov_ready = b->b_x;
		v->ov_why = SLOT_WHY_REST;
	}
	/*
	 * Charged tokens still out may come back early (usage): a wait for
	 * tokens they could cover is not booked but asked again (ov_soft).
	 */
	v->ov_soft = 1;
	for (l = 0; l < CONFIG_NLIMITS; l++) {
		cap = b != NULL && b->b_k[l] > 0 ? b->b_k[l] : a->a_declared[l];
		if (cap <= 0)
			continue;
		known = 1;
		e = b != NULL ? b->b_e[l] : -E_FAR;
		c = charge(l, a->a_tokens, cap);
		at = e_add(e, refill_ns(l, c, cap));
		if (at > v->ov_ready) {
			v->ov_ready = at;
			v->ov_why = (signed char)l;
		}
		if (at > r->r_now + SOFT_POLL_NS) {
			level = (double)(r->r_now - e) * (double)cap /
				(double)window_ns[l];
			if (level > (double)cap)
				level = (double)cap;
			if (!LIMIT_TOKENS(l) ||
			    level + (double)(b != NULL ? b->b_ot : 0) <
				    (double)c)
				v->ov_soft = 0;
		}
	}
	if (v->ov_ready <= r->r_now + SOFT_POLL_NS || v->ov_why < 0 ||
	    v->ov_why >= CONFIG_NLIMITS)
		v->ov_soft = 0;
	v->ov_probe = !known;
	v->ov_busy = !known && b != NULL && b->b_p > r->r_now;
}

/* reserve.lua's place(i, at): key i's slot for a request ready at. */
static int64_t
place(struct resv *r, int i, int64_t at)
{
	int64_t hig = r->r_now + r->r_maxw + 2 * r->r_gap;
	int64_t hik = r->r_now + r->r_maxw + 2 * r->r_iv;
	struct timeline kt;
	int64_t a;
	int64_t b;
	int k;

	if (!r->r_perkey) {
		if (!r->r_memo || r->r_memo_at != at) {
			r->r_memo = 1;
			r->r_memo_at = at;
			r->r_memo_slot =
				tl_fit(&r->r_global, at, r->r_gap, hig);
		}
		return r->r_memo_slot;
	}
	kt = tl_open(r->r_st, i);
	for (k = 0; k < 64; k++) {
		a = tl_fit(&r->r_global, at, r->r_gap, hig);
		b = tl_fit(&kt, a, r->r_iv, hik);
		if (b == a)
			return a;
		at = b;
	}
	return at;
}

/* Books the chosen slot and charges org's budgets (rest of reserve.lua). */
static void
book(struct resv *r, int best, int org, struct org_view *v, int64_t bat,
     struct slot *out)
{
	struct sched_local_state *st = r->r_st;
	const struct ask *a = r->r_ask;
	struct budget *b = v->ov_b;
	struct timeline kt;
	long long cap;
	int64_t e;
	int l;

	st->st_rr = best + 1;
	if (r->r_gap > 0)
		tl_add(&r->r_global, bat);
	if (r->r_perkey) {
		kt = tl_open(st, best);
		tl_add(&kt, bat);
	}
	if (b == NULL)
		b = budget_new(st, r->r_cfg, org, a, r->r_now);
	for (l = 0; l < CONFIG_NLIMITS; l++) {
		cap = b->b_k[l] > 0 ? b->b_k[l] : a->a_declared[l];
		if (cap <= 0)
			continue;
		e = b->b_e[l];
		if (e < bat - window_ns[l])
			e = bat - window_ns[l];
		b->b_e[l] = e_add(
			e, refill_ns(l, charge(l, a->a_tokens, cap), cap));
	}
	if (v->ov_probe) {
		out->s_probe = 1;
		b->b_p = r->r_now + ((int64_t)r->r_cfg->connect_timeout_ms +
				     r->r_cfg->first_byte_timeout_ms + 1000) *
					    MS_NS;
	}
	out->s_first = b->b_ot == 0;
	b->b_cq += 1;
	b->b_ct += a->a_tokens;
	b->b_ot += a->a_tokens;
	/* reserve.lua's keep(): outlive the slot, never shorten. */
	if (b->b_expire_ns < bat + DAY_NS)
		b->b_expire_ns = bat + DAY_NS;
	out->s_cq = b->b_cq;
	out->s_ct = b->b_ct;
	out->s_rt = b->b_rt;
}

/* Fills out's key, wait and slot (ns) as reserve.lua's reply. */
static void
answer(struct slot *out, int key, int64_t now, int64_t at, int why)
{
	out->s_key = key;
	out->s_why = why;
	out->s_wait_us = (at - now) / 1000;
	out->s_at_us = at / 1000;
	out->s_deadline_ns = at;
}

/*
 * 1 if bat can be booked. A timeline with no room left is as if full
 * that far ahead (SLOT_TOO_FAR): the only place where the arrays' bounds
 * show.
 */
static int
room(struct resv *r, int best, int64_t bat)
{
	struct timeline kt;

	if (r->r_gap > 0 && !tl_room(&r->r_global, bat))
		return 0;
	if (r->r_perkey) {
		kt = tl_open(r->r_st, best);
		if (!tl_room(&kt, bat))
			return 0;
	}
	return 1;
}

/* reserve.lua, step for step, on st (locked) at time now. */
static void
reserve_locked(struct resv *r, struct slot *out)
{
	struct sched_local_state *st = r->r_st;
	const struct config *c = r->r_cfg;
	struct org_view views[CONFIG_MAX_KEYS];
	struct org_view *v;
	struct timeline kt;
	int64_t now = r->r_now;
	int64_t bat = 0;
	int64_t bready = 0;
	int64_t out_at = -1; /* the earliest ready beyond the longest wait */
	int64_t soft = -1;   /* the earliest wait for tokens that may return */
	int64_t w;
	int64_t ready;
	int64_t at;
	int n = c->nkeys;
	int best = -1;
	int bwhy = SLOT_WHY_NONE;
	int outwhy = SLOT_WHY_DISABLED;
	int softwhy = SLOT_WHY_NONE;
	int busy = 0;
	int why;
	int rr;
	int i;
	int j;

	if (n <= 0 || n > CONFIG_MAX_KEYS || c->norgs <= 0 ||
	    c->norgs > CONFIG_MAX_KEYS) {
		answer(out, SLOT_ALL_RESTING, now, now, SLOT_WHY_DISABLED);
		return;
	}
	memset(views, 0, (size_t)c->norgs * sizeof(views[0]));
	org_find(r, views);
	r->r_global = tl_open(st, -1);
	if (r->r_gap > 0)
		tl_prune(&r->r_global, now - r->r_gap);
	rr = (int)(((st->st_rr % n) + n) % n);
	for (j = 0; j < n; j++) {
		i = (rr + j) % n;
		v = &views[c->key_org[i]];
		if (!v->ov_done)
			org_look(r, v);
		ready = v->ov_ready;
		why = v->ov_why;
		/* A disabled key: ready when it is back, if that is later. */
		if (st->st_key_rest_ns[i] > ready) {
			ready = st->st_key_rest_ns[i];
			why = SLOT_WHY_DISABLED;
		}
		if (v->ov_soft && why == v->ov_why) {
			if (soft < 0 || ready < soft) {
				soft = ready;
				softwhy = why;
			}
		} else if (ready - now > r->r_maxw) {
			if (out_at < 0 || ready < out_at) {
				out_at = ready;
				outwhy = why;
			}
		} else if (v->ov_busy) {
			busy = 1;
		} else {
			/* Pruned as each is used: the same slots as all at once. */
			if (r->r_perkey) {
				kt = tl_open(st, i);
				tl_prune(&kt, now - r->r_iv);
			}
			at = place(r, i, ready);
			if (best < 0 || at < bat) {
				best = i;
				bat = at;
				bready = ready;
				bwhy = why;
			}
		}
	}
	if (busy && (best < 0 || bat - now > POLL_NS)) {
		answer(out, SLOT_POLL, now, now + POLL_NS, SLOT_WHY_PROBE);
		out->s_at_us = 0;
		out->s_deadline_ns = 0;
		return;
	}
	if (soft >= 0 && (best < 0 || bat > soft)) {
		/*
		 * Asked again a quarter of the way there: soon enough to use
		 * tokens that come back, few enough round trips on a long wait.
		 */
		w = (soft - now) / 4;
		if (w < SOFT_POLL_NS)
			w = SOFT_POLL_NS;
		if (w > 10 * SOFT_POLL_NS)
			w = 10 * SOFT_POLL_NS;
		answer(out, SLOT_POLL, now, now + w, softwhy);
		out->s_at_us = 0;
		out->s_deadline_ns = 0;
		return;
	}
	if (best < 0) {
		answer(out, SLOT_ALL_RESTING, now, out_at, outwhy);
		return;
	}
	if (bat - now > r->r_maxw || !room(r, best, bat)) {
		answer(out, SLOT_TOO_FAR, now, bat, SLOT_WHY_SPACING);
		return;
	}
	book(r, best, c->key_org[best], &views[c->key_org[best]], bat, out);
	why = bwhy;
	if (bat > bready)
		why = SLOT_WHY_SPACING;
	if (bat <= now)
		why = SLOT_WHY_NONE;
	answer(out, best, now, bat, why);
}

void
sched_local_reserve(struct sched_local *l, const struct sched_request *rq,
		    struct slot *out)
{
	const struct config *c = l->sl_cfg;
	struct sched_local_state *st = l->sl_state;
	struct client_ask ca;
	struct client *cl;
	struct ask a;
	struct resv r;

	memset(out, 0, sizeof(*out));
	out->s_local = 1;
	out->s_req = rq;
	out->s_why = SLOT_WHY_NONE;
	ask_init(&a, c, rq);
	client_ask_init(&ca, rq);
	memset(&r, 0, sizeof(r));
	r.r_st = st;
	r.r_cfg = c;
	r.r_ask = &a;
	r.r_iv = (int64_t)c->interval_ms * MS_NS;
	r.r_gap = c->scope_per_key ? (int64_t)c->global_interval_ms * MS_NS
				   : r.r_iv;
	r.r_perkey = c->scope_per_key && r.r_iv > 0;
	r.r_maxw = (int64_t)c->queue_max_wait_ms * MS_NS;
	state_lock(st);
	r.r_now = l->sl_now();
	/* The client's limits first: over one, nothing else is looked at. */
	if (!client_check(st, &ca, r.r_now, &cl, out)) {
		reserve_locked(&r, out);
		client_keep(st, &ca, cl, r.r_now, out->s_key);
	}
	state_unlock(st);
}

int
sched_local_clock(struct sched_local *l, const struct clock_sample *s,
		  int64_t at_us, int64_t *local_us, int64_t *err_us)
{
	struct sched_local_state *st = l->sl_state;

	if (st == NULL)
		return 0;
	state_lock(st);
	*local_us = clock_sync_local(&st->st_clock, s, at_us, err_us);
	state_unlock(st);
	return 1;
}

int
sched_local_clock_now(struct sched_local *l, int64_t at_us, int64_t *local_us,
		      int64_t *err_us)
{
	struct sched_local_state *st = l->sl_state;
	int ok;

	if (st == NULL)
		return 0;
	state_lock(st);
	ok = clock_sync_translate(&st->st_clock, at_us, local_us, err_us);
	state_unlock(st);
	return ok;
}

void
sched_local_rest(struct sched_local *l, int key, long ms, int disabled)
{
	struct sched_local_state *st = l->sl_state;
	int64_t till;

	if (st == NULL || key < 0 || key >= CONFIG_MAX_KEYS)
		return;
	state_lock(st);
	till = l->sl_now() + (int64_t)ms * MS_NS;
	if (st->st_key_rest_ns[key] < till)
		st->st_key_rest_ns[key] = till;
	if (disabled && st->st_key_stats[key].ks_disabled_ns < till)
		st->st_key_stats[key].ks_disabled_ns = till;
	state_unlock(st);
}

/* --- settle.lua ------------------------------------------------------- */

enum settle_mode {
	MODE_RELEASE,
	MODE_ANSWER,
	MODE_HEADERS, /* a probe's headers: "answer", its usage to follow */
	MODE_USAGE,
};

/* What settle.lua's arguments say, prepared outside the lock. */
struct settlement {
	enum settle_mode t_mode;
	struct ask t_ask;
	const struct slot *t_sl;
	long t_status;	  /* 0: no answer */
	long long t_used; /* -1: unknown */
	int64_t t_rest_ns;
	int64_t t_came_ns; /* when the headers came, 0: now */
	int t_limits;	   /* t_lim holds the answer's limits ("-" if 0) */
	struct hdr_limit t_lim[HDR_NLIMITS];
	int64_t t_day; /* today (UTC days since 1970), for the counts */
};

/*
 * One budget's capacities and empty times while settle.lua works on
 * them: ceil(t_e + t_d) is the new empty time, the fraction kept until
 * it is stored, as the script keeps doubles until its HSET.
 */
struct tally {
	long long t_cap[CONFIG_NLIMITS];
	int64_t t_e[CONFIG_NLIMITS];
	double t_d[CONFIG_NLIMITS];
};

/* settle.lua's give(l, d): moves bucket l's level by d. */
static void
give(struct tally *y, int l, double d)
{
	if (y->t_cap[l] > 0)
		y->t_d[l] -= d * (double)window_ns[l] / (double)y->t_cap[l];
}

/* give(l, cost) on every bucket: a request's whole charge back. */
static void
give_all(struct tally *y, long long tokens)
{
	int l;

	for (l = 0; l < CONFIG_NLIMITS; l++)
		if (y->t_cap[l] > 0)
			give(y, l, (double)charge(l, tokens, y->t_cap[l]));
}

/*
 * settle.lua's rt_at: rt when the headers left (when), from the ring of
 * recent give-backs: the latest entry not after when; else nothing (0)
 * if the ring never wrapped, or the oldest it has (errs low); never
 * below the reservation's own rt.
 */
static int64_t
rt_at(const struct budget *b, const struct slot *sl, int64_t when)
{
	int64_t best_t = 0, best_v = 0, old_t = 0, old_v = 0;
	int best = 0;
	int old = 0;
	int64_t v;
	int j;

	for (j = 0; j < RING; j++) {
		/* Entries written so far: 1, 2, ... (mod RING), as HINCRBY. */
		if (b->b_ri < RING && (j == 0 || j > b->b_ri))
			continue;
		if (b->b_ring_t[j] <= when &&
		    (!best || b->b_ring_t[j] > best_t)) {
			best = 1;
			best_t = b->b_ring_t[j];
			best_v = b->b_ring_rt[j];
		}
		if (!old || b->b_ring_t[j] < old_t) {
			old = 1;
			old_t = b->b_ring_t[j];
			old_v = b->b_ring_rt[j];
		}
	}
	if (best)
		v = best_v;
	else if (b->b_ri <= RING)
		v = 0; /* before the oldest, and the ring never wrapped */
	else
		v = old ? old_v : b->b_rt;
	return v < sl->s_rt ? sl->s_rt : v;
}

/* settle.lua's "answer" on b: the headers' levels, a 429's verdict. */
static int
settle_answer(const struct settlement *t, struct budget *b, struct tally *y,
	      int64_t now)
{
	const struct slot *sl = t->t_sl;
	long long tokens = t->t_ask.a_tokens;
	int admitted = t->t_status >= 200 && t->t_status < 300;
	int seen = b->b_seen;
	int64_t sent = sl->s_deadline_ns < now ? sl->s_deadline_ns : now;
	int64_t came =
		t->t_came_ns > 0 && t->t_came_ns < now ? t->t_came_ns : now;
	long long old_k;
	long long k;
	long long rem;
	long long c;
	double after;
	double back;
	double base;
	double mine;
	double slack;
	int corrected[CONFIG_NLIMITS] = {0};
	int alone;
	int ret = -1;
	int l;

	if (came < sent)
		came = sent;
	/* The only request out all its life (settle.lua's alone). */
	alone = sl->s_first && b->b_ot == tokens && b->b_cq == sl->s_cq;
	if (t->t_limits) {
		/*
		 * From Cerebras' remaining when it admitted this request (it
		 * computes it at admission), refilled since its headers came
		 * (never before the slot), plus what came back after the
		 * slot, less what was charged after this request (as
		 * settle.lua): the budget's level is moved
		 * only when the proxy's own is outside what that can mean, and
		 * set outright after a 429, a first answer or a new capacity.
		 */
		for (l = 0; l < CONFIG_NLIMITS; l++) {
			if (!t->t_lim[l].hl_known ||
			    t->t_lim[l].hl_limit <= 0 ||
			    t->t_lim[l].hl_remaining < 0)
				continue;
			k = t->t_lim[l].hl_limit;
			rem = t->t_lim[l].hl_remaining;
			old_k = y->t_cap[l];
			y->t_cap[l] = k;
			b->b_k[l] = k;
			c = LIMIT_TOKENS(l) ? tokens : 1;
			/*
			 * Cerebras' level now, had it admitted every request
			 * reserved after this one before it computed remaining
			 * (base), or none of them (base - after): which it had
			 * is known only roughly for requests sent at about the
			 * same time.
			 */
			after = (double)(b->b_cq - sl->s_cq);
			back = 0;
			if (LIMIT_TOKENS(l)) {
				after = (double)(b->b_ct - sl->s_ct);
				back = (double)(b->b_rt - rt_at(b, sl, sent));
			}
			base = (double)rem +
			       (double)(now - came) * (double)k /
				       (double)window_ns[l] +
			       back;
			if (base > (double)k)
				base = (double)k;
			mine = ((double)(now - y->t_e[l]) - y->t_d[l]) *
			       (double)k / (double)window_ns[l];
			if (mine > (double)k)
				mine = (double)k;
			slack = (double)charge(l, c, k);
			if (slack < (double)k / 50)
				slack = (double)k / 50;
			/*
			 * Set after a 429, a first answer, a new capacity (the
			 * proxy was wrong, or knew nothing); else only outside
			 * what the answer can mean, to its lower end: requests
			 * reserved after this one may be booked for later, and
			 * then surely are not in remaining.
			 */
			/*
			 * Set outright after a 429, a first answer, a new
			 * capacity; lowered to base - after when above base;
			 * raised to base only when this request was the only
			 * one out (as settle.lua).
			 */
			if (t->t_status == 429 || !seen || old_k != k ||
			    mine > base + slack) {
				y->t_e[l] = now;
				y->t_d[l] = -(base - after) *
					    (double)window_ns[l] / (double)k;
				corrected[l] = 1;
			} else if (alone && mine < base - slack) {
				y->t_e[l] = now;
				y->t_d[l] = -base * (double)window_ns[l] /
					    (double)k;
				corrected[l] = 1;
			}
			if (t->t_status == 429 && rem < c && ret < 0)
				ret = l;
		}
		b->b_seen = 1;
	} else if (admitted) {
		/* An answer without limits: there are none to keep. */
		b->b_seen = 1;
	}
	if (!admitted) {
		/*
		 * Never charged upstream: a level from the headers already
		 * leaves it out; the other budgets get the charge back.
		 */
		for (l = 0; l < CONFIG_NLIMITS; l++)
			if (!corrected[l] && y->t_cap[l] > 0)
				give(y, l,
				     (double)charge(l, tokens, y->t_cap[l]));
	}
	if (t->t_status == 429 && ret < 0 && t->t_rest_ns > 0) {
		if (b->b_x < now + t->t_rest_ns)
			b->b_x = now + t->t_rest_ns;
		ret = SLOT_WHY_REST;
	}
	return ret;
}

/*
 * The end of settle.lua: what the answer says of its key (its status,
 * until when the budget a 429 spent is short of a request) and the day's
 * counts, b's levels already settled (caps in y).
 */
static void
settle_record(struct sched_local_state *st, const struct settlement *t,
	      const struct budget *b, const struct tally *y, int64_t now)
{
	struct key_stat *ks = &st->st_key_stats[t->t_sl->s_key];
	int64_t till = 0;
	int64_t at;
	int l;

	if (t->t_mode == MODE_RELEASE)
		return;
	if (ks->ks_day != t->t_day) {
		ks->ks_day = t->t_day;
		ks->ks_requests = 0;
		ks->ks_tokens = 0;
	}
	if (t->t_mode != MODE_USAGE)
		ks->ks_requests++;
	if (t->t_mode != MODE_HEADERS && t->t_status >= 200 &&
	    t->t_status < 300 && t->t_used > 0)
		ks->ks_tokens += t->t_used;
	if (t->t_mode == MODE_USAGE || t->t_status <= 0)
		return;
	if (t->t_status == 429) {
		till = b->b_x;
		for (l = 0; l < CONFIG_NLIMITS; l++) {
			if (y->t_cap[l] <= 0)
				continue;
			at = e_add(b->b_e[l],
				   refill_ns(l,
					     charge(l, t->t_ask.a_tokens,
						    y->t_cap[l]),
					     y->t_cap[l]));
			if (at > till)
				till = at;
		}
		if (till < now)
			till = 0;
	}
	ks->ks_status = (int32_t)t->t_status;
	ks->ks_cool_ns = till;
}

/* settle.lua, step for step, on st (locked) at time now. */
static int
settle_locked(struct sched_local_state *st, const struct config *cfg,
	      const struct settlement *t, int64_t now)
{
	const struct slot *sl = t->t_sl;
	const struct ask *a = &t->t_ask;
	int org = cfg->key_org[sl->s_key];
	struct budget *b = budget_find(st, cfg, org, a, now);
	struct timeline gt;
	struct timeline kt;
	struct tally y;
	int ret = -1;
	int l;

	if (b == NULL)
		b = budget_new(st, cfg, org, a, now);
	for (l = 0; l < CONFIG_NLIMITS; l++) {
		y.t_cap[l] = b->b_k[l] > 0 ? b->b_k[l] : a->a_declared[l];
		y.t_e[l] = b->b_e[l];
		y.t_d[l] = 0;
	}
	if (t->t_mode == MODE_RELEASE) {
		gt = tl_open(st, -1);
		kt = tl_open(st, sl->s_key);
		tl_remove(&gt, sl->s_deadline_ns);
		tl_remove(&kt, sl->s_deadline_ns);
		/*
		 * A charge given back (never sent, or refused) leaves cq and
		 * ct as they are: the corrections of requests reserved after
		 * it then allow for it still, erring low, never high.
		 */
		give_all(&y, a->a_tokens);
	} else if (t->t_mode == MODE_ANSWER || t->t_mode == MODE_HEADERS) {
		ret = settle_answer(t, b, &y, now);
	}
	if ((t->t_mode == MODE_ANSWER || t->t_mode == MODE_USAGE) &&
	    t->t_status >= 200 && t->t_status < 300 && t->t_used >= 0) {
		for (l = 1; l < CONFIG_NLIMITS; l += 2)
			if (y.t_cap[l] > 0)
				give(&y, l,
				     (double)(charge(l, a->a_tokens,
						     y.t_cap[l]) -
					      t->t_used));
		b->b_rt += a->a_tokens - t->t_used;
		b->b_ri++;
		b->b_ring_t[b->b_ri % RING] = now;
		b->b_ring_rt[b->b_ri % RING] = b->b_rt;
	}
	if (sl->s_probe && t->t_mode != MODE_USAGE)
		b->b_p = 0;
	/* Settled: its charge is no longer out (a probe's, at its usage). */
	if (t->t_mode != MODE_HEADERS)
		b->b_ot -= a->a_tokens;
	for (l = 0; l < CONFIG_NLIMITS; l++)
		if (y.t_cap[l] > 0)
			b->b_e[l] = e_add(y.t_e[l], y.t_d[l]);
	if (b->b_expire_ns < now + DAY_NS)
		b->b_expire_ns = now + DAY_NS;
	settle_record(st, t, b, &y, now);
	return ret;
}

int
sched_local_settle(struct sched_local *l, const struct slot *sl,
		   const char *mode, const struct sched_outcome *o)
{
	const struct config *cfg = l->sl_cfg;
	struct sched_local_state *st = l->sl_state;
	struct settlement t;
	int i;
	int ret;

	if (st == NULL || sl->s_key < 0 || sl->s_key >= cfg->nkeys)
		return -1;
	memset(&t, 0, sizeof(t));
	if (strcmp(mode, "release") == 0)
		t.t_mode = MODE_RELEASE;
	else if (strcmp(mode, "answer") == 0)
		t.t_mode = MODE_ANSWER;
	else if (strcmp(mode, "headers") == 0)
		t.t_mode = MODE_HEADERS;
	else if (strcmp(mode, "usage") == 0)
		t.t_mode = MODE_USAGE;
	else
		return -1;
	t.t_sl = sl;
	ask_init(&t.t_ask, cfg, sl->s_req);
	t.t_used = -1;
	if (o != NULL) {
		t.t_status = o->so_status;
		t.t_used = o->so_used;
		t.t_came_ns = o->so_hdr_ns;
		t.t_rest_ns =
			(int64_t)(o->so_rest_ms > 0 ? o->so_rest_ms
						    : cfg->key_cooldown_ms) *
			MS_NS;
		if ((t.t_mode == MODE_ANSWER || t.t_mode == MODE_HEADERS) &&
		    o->so_limits != NULL) {
			memcpy(t.t_lim, o->so_limits, sizeof(t.t_lim));
			for (i = 0; i < HDR_NLIMITS; i++)
				t.t_limits |= t.t_lim[i].hl_known;
		}
	}
	t.t_day = l->sl_day != NULL ? l->sl_day() : (int64_t)time(NULL) / 86400;
	state_lock(st);
	ret = settle_locked(st, cfg, &t, l->sl_now());
	state_unlock(st);
	return ret;
}

/* --- the inspection --------------------------------------------------- */

/* ns to whole ms, rounded up: a rest of 1 ns left is not over. */
static int64_t
ceil_ms(int64_t ns)
{
	return ns <= 0 ? 0 : (ns + MS_NS - 1) / MS_NS;
}

_Static_assert(sizeof(((struct sched_budget_view *)0)->bv_model) <=
		       MODEL_MAX + 1,
	       "a model name in a view fits a budget's");

/* Fills v's entries for budget b (live, of a known organisation). */
static void
inspect_budget(const struct config *cfg, const struct budget *b, int64_t now,
	       struct sched_view *v)
{
	struct sched_budget_view *bv;
	long long declared[CONFIG_NLIMITS];
	char model[MODEL_MAX + 1] = {0};
	long long cap;
	double level;
	int l;

	memcpy(model, b->b_model, strnlen(b->b_model, MODEL_MAX));
	config_declared(cfg, model, declared);
	for (l = 0; l < CONFIG_NLIMITS; l++) {
		cap = b->b_k[l] > 0 ? b->b_k[l] : declared[l];
		if (cap <= 0 || v->sv_nbudgets >= SCHED_VIEW_BUDGETS)
			continue;
		bv = &v->sv_budgets[v->sv_nbudgets++];
		memset(bv, 0, sizeof(*bv));
		bv->bv_org = b->b_org;
		memcpy(bv->bv_model, model, sizeof(bv->bv_model) - 1);
		bv->bv_limit = l;
		bv->bv_cap = cap;
		level = (double)(now - b->b_e[l]) * (double)cap /
			(double)window_ns[l];
		bv->bv_level = level < 0	     ? 0
			       : level > (double)cap ? cap
						     : (long long)level;
	}
}

void
sched_local_inspect(struct sched_local *l, struct sched_view *v)
{
	const struct config *cfg = l->sl_cfg;
	struct sched_local_state *st = l->sl_state;
	struct sched_key_view *kv;
	const struct key_stat *ks;
	const struct budget *b;
	struct timeline t;
	int64_t today =
		l->sl_day != NULL ? l->sl_day() : (int64_t)time(NULL) / 86400;
	int64_t last = 0;
	int64_t now;
	int i;
	int j;

	v->sv_nbudgets = 0;
	v->sv_depth_ms = 0;
	if (st == NULL)
		return;
	state_lock(st);
	now = l->sl_now();
	for (i = 0; i < v->sv_nkeys && i < cfg->nkeys && i < CONFIG_MAX_KEYS;
	     i++) {
		kv = &v->sv_keys[i];
		ks = &st->st_key_stats[i];
		memset(kv, 0, sizeof(*kv));
		kv->kv_state = KEY_STATE_OK;
		if (ks->ks_disabled_ns > now) {
			kv->kv_state = KEY_STATE_DISABLED;
			kv->kv_until_ms = ceil_ms(ks->ks_disabled_ns - now);
		} else if (st->st_key_rest_ns[i] > now) {
			kv->kv_state = KEY_STATE_RESTING;
			kv->kv_until_ms = ceil_ms(st->st_key_rest_ns[i] - now);
		} else if (ks->ks_cool_ns > now) {
			kv->kv_state = KEY_STATE_RESTING;
			kv->kv_until_ms = ceil_ms(ks->ks_cool_ns - now);
		}
		kv->kv_last_status = ks->ks_status;
		kv->kv_requests = ks->ks_day == today ? ks->ks_requests : 0;
		kv->kv_tokens = ks->ks_day == today ? ks->ks_tokens : 0;
	}
	for (j = 0; j < BUDGETS; j++) {
		b = &st->st_budgets[j];
		if (b->b_expire_ns > now && b->b_org >= 0 &&
		    b->b_org < cfg->norgs &&
		    memcmp(b->b_org_fp, cfg->org_fps[b->b_org], 9) == 0)
			inspect_budget(cfg, b, now, v);
	}
	t = tl_open(st, -1);
	if (*t.tl_n > 0)
		last = t.tl_at[*t.tl_n - 1];
	for (i = 0; i < cfg->nkeys && i < CONFIG_MAX_KEYS; i++) {
		t = tl_open(st, i);
		if (*t.tl_n > 0 && t.tl_at[*t.tl_n - 1] > last)
			last = t.tl_at[*t.tl_n - 1];
	}
	v->sv_depth_ms = last > now ? ceil_ms(last - now) : 0;
	state_unlock(st);
}
