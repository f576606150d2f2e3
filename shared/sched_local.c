/*
 * sched_local.c - per-host scheduling state in shared memory.
 */
#include "sched_local.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * Bump when the layout changes: the name changes with it, so workers of
 * an older build on the same host never map a state they misread.
 */
#define STATE_LAYOUT "2"

/* Times are CLOCK_MONOTONIC ns; 0 means "never set". */
struct sched_local_state {
	/* 0 when free, else the holder's pid (for a dead holder: see lock) */
	_Atomic int32_t st_lock;
	int64_t st_rr;	    /* round-robin position */
	int64_t st_next_ns; /* global timeline (or floor): next free slot */
	int64_t st_key_next_ns[CONFIG_MAX_KEYS];
	int64_t st_key_rest_ns[CONFIG_MAX_KEYS];
};

/* A holder that keeps the lock this long is checked for being alive. */
#define LOCK_STALE_SPINS 100000

/*
 * The lock is held for a few hundred ns and the holder makes no system
 * call meanwhile, so waiters spin (yielding the CPU). A process killed
 * while holding it (SIGKILL in those few hundred ns) would block its host
 * for good: a waiter that has spun long takes the lock over once the
 * holder's pid is gone.
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
sched_local_name(const struct config *cfg, char *out, size_t outsz)
{
	char id[600];
	char fp[9];

	snprintf(id, sizeof(id), "%s\n%s\n%s", STATE_LAYOUT, cfg->redis_prefix,
		 cfg->redis_enabled ? cfg->redis_url : "none");
	key_fingerprint(id, fp);
	snprintf(out, outsz, "/cerebras-proxy-%s-%ld", fp, (long)geteuid());
}

enum cp_err
sched_local_open(struct sched_local *l, const struct config *cfg, char *errbuf,
		 size_t errsz)
{
	char name[64];
	void *p;
	int fd;

	memset(l, 0, sizeof(*l));
	l->sl_cfg = cfg;
	l->sl_now = mono_ns;
	sched_local_name(cfg, name, sizeof(name));
	fd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(errbuf, errsz, "shm_open %s: %s", name,
			 strerror(errno));
		return CP_ERR_IO;
	}
	/* Growing a fresh object zero-fills it: a valid initial state. */
	if (ftruncate(fd, sizeof(struct sched_local_state)) != 0) {
		snprintf(errbuf, errsz, "ftruncate %s: %s", name,
			 strerror(errno));
		close(fd);
		return CP_ERR_IO;
	}
	p = mmap(NULL, sizeof(struct sched_local_state), PROT_READ | PROT_WRITE,
		 MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		snprintf(errbuf, errsz, "mmap %s: %s", name, strerror(errno));
		return CP_ERR_IO;
	}
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

/* reserve.lua, step for step, on st (locked) at time now. */
static void
reserve_locked(struct sched_local_state *st, const struct config *c,
	       int64_t now, struct slot *out)
{
	int64_t iv = (int64_t)c->interval_ms * 1000000;
	int64_t gap = c->scope_per_key
			      ? (int64_t)c->global_interval_ms * 1000000
			      : iv;
	int64_t max_wait = (int64_t)c->queue_max_wait_ms * 1000000;
	int n = c->nkeys;
	int rr = (int)(st->st_rr % n);
	int64_t g = gap > 0 ? st->st_next_ns : 0;
	int64_t free_at = -1;
	int64_t bat = 0;
	int64_t at;
	int best = -1;
	int i;
	int j;

	for (j = 0; j < n; j++) {
		i = (rr + j) % n;
		if (st->st_key_rest_ns[i] > now) {
			if (free_at < 0 || st->st_key_rest_ns[i] < free_at)
				free_at = st->st_key_rest_ns[i];
			continue;
		}
		at = g > now ? g : now;
		if (c->scope_per_key && st->st_key_next_ns[i] > at)
			at = st->st_key_next_ns[i];
		if (best < 0 || at < bat) {
			best = i;
			bat = at;
		}
		if (!c->scope_per_key)
			break;
	}
	if (best < 0) {
		out->s_key = SLOT_ALL_RESTING;
		out->s_wait_us = (free_at - now) / 1000;
		out->s_at_us = free_at / 1000;
		return;
	}
	if (bat - now > max_wait) {
		out->s_key = SLOT_TOO_FAR;
		out->s_wait_us = (bat - now) / 1000;
		out->s_at_us = bat / 1000;
		return;
	}
	st->st_rr = best + 1;
	if (gap > 0)
		st->st_next_ns = bat + gap;
	if (c->scope_per_key && iv > 0)
		st->st_key_next_ns[best] = bat + iv;
	out->s_key = best;
	out->s_at_us = bat / 1000;
	out->s_wait_us = (bat - now) / 1000;
	out->s_deadline_ns = bat;
}

void
sched_local_reserve(struct sched_local *l, const struct sched_request *rq,
		    struct slot *out)
{
	struct sched_local_state *st = l->sl_state;

	memset(out, 0, sizeof(*out));
	out->s_local = 1;
	out->s_req = rq;
	out->s_why = SLOT_WHY_NONE;
	state_lock(st);
	reserve_locked(st, l->sl_cfg, l->sl_now(), out);
	state_unlock(st);
}

static void
release(struct sched_local *l, const struct slot *sl)
{
	const struct config *c = l->sl_cfg;
	struct sched_local_state *st = l->sl_state;
	int64_t at = sl->s_deadline_ns;
	int64_t iv = (int64_t)c->interval_ms * 1000000;
	int64_t gap = c->scope_per_key
			      ? (int64_t)c->global_interval_ms * 1000000
			      : iv;

	if (st == NULL || sl->s_key < 0)
		return;
	/* Only the last slot handed out goes back, as in release.lua. */
	state_lock(st);
	if (c->scope_per_key && iv > 0 &&
	    st->st_key_next_ns[sl->s_key] == at + iv)
		st->st_key_next_ns[sl->s_key] = at;
	if (gap > 0 && st->st_next_ns == at + gap)
		st->st_next_ns = at;
	state_unlock(st);
}

void
sched_local_rest(struct sched_local *l, int key, long ms)
{
	struct sched_local_state *st = l->sl_state;
	int64_t till;

	if (st == NULL || key < 0 || key >= CONFIG_MAX_KEYS)
		return;
	till = l->sl_now() + (int64_t)ms * 1000000;
	state_lock(st);
	if (st->st_key_rest_ns[key] < till)
		st->st_key_rest_ns[key] = till;
	state_unlock(st);
}

int
sched_local_settle(struct sched_local *l, const struct slot *sl,
		   const char *mode, const struct sched_outcome *o)
{
	(void)o;
	if (strcmp(mode, "release") == 0)
		release(l, sl);
	return -1;
}
