/*
 * local.c - per-host scheduling state in shared memory, lock-free.
 */
#include "local.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct local_state {
	_Atomic int64_t rr;	 /* round-robin position */
	_Atomic int64_t next_ns; /* global timeline: next free slot */
	_Atomic int64_t key_next_ns[CONFIG_MAX_KEYS];
	_Atomic int64_t key_cool_ns[CONFIG_MAX_KEYS];
};

enum cp_err
local_open(struct local_sched *l, const struct config *cfg, char *errbuf,
	   size_t errsz)
{
	char name[64];
	char fp[9];
	char id[600];
	void *p;
	int fd;

	memset(l, 0, sizeof(*l));
	l->ls_cfg = cfg;
	/* One object per proxy (REDIS_PREFIX and REDIS_URL) and user. */
	snprintf(id, sizeof(id), "%s\n%s", cfg->redis_prefix,
		 cfg->redis_enabled ? cfg->redis_url : "none");
	key_fingerprint(id, fp);
	snprintf(name, sizeof(name), "/cerebras-proxy-%s-%ld", fp,
		 (long)geteuid());
	fd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(errbuf, errsz, "shm_open %s: %s", name,
			 strerror(errno));
		return CP_ERR_IO;
	}
	/* Growing a fresh object zero-fills it: a valid initial state. */
	if (ftruncate(fd, sizeof(struct local_state)) != 0) {
		snprintf(errbuf, errsz, "ftruncate %s: %s", name,
			 strerror(errno));
		close(fd);
		return CP_ERR_IO;
	}
	p = mmap(NULL, sizeof(struct local_state), PROT_READ | PROT_WRITE,
		 MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		snprintf(errbuf, errsz, "mmap %s: %s", name, strerror(errno));
		return CP_ERR_IO;
	}
	l->ls_state = p;
	return CP_OK;
}

void
local_close(struct local_sched *l)
{
	if (l->ls_state != NULL)
		(void)munmap(l->ls_state, sizeof(struct local_state));
	l->ls_state = NULL;
}

/*
 * Takes the slot max(now, *next) on a timeline and moves it gap further,
 * unless the wait would exceed max_wait. Returns the slot, or -1.
 */
static int64_t
timeline_take(_Atomic int64_t *next, int64_t now, int64_t gap, int64_t floor,
	      int64_t max_wait)
{
	int64_t cur = atomic_load(next);
	int64_t at;

	for (;;) {
		at = cur > now ? cur : now;
		if (at < floor)
			at = floor;
		if (at - now > max_wait)
			return -1;
		if (atomic_compare_exchange_weak(next, &cur, at + gap))
			return at;
	}
}

void
local_reserve(struct local_sched *l, struct slot *out)
{
	const struct config *c = l->ls_cfg;
	struct local_state *st = l->ls_state;
	int64_t now = mono_ns();
	int64_t iv = (int64_t)c->interval_ms * 1000000;
	int64_t floor_gap = (int64_t)c->global_interval_ms * 1000000;
	int64_t max_wait = (int64_t)c->queue_max_wait_ms * 1000000;
	int64_t free_at = -1;
	int64_t best_at = 0;
	int64_t at;
	int64_t g;
	int best = -1;
	int start = (int)(atomic_load(&st->rr) % c->nkeys);
	int i;
	int j;

	memset(out, 0, sizeof(*out));
	for (j = 0; j < c->nkeys; j++) {
		int64_t cool;

		i = (start + j) % c->nkeys;
		cool = atomic_load(&st->key_cool_ns[i]);
		if (cool > now) {
			if (free_at < 0 || cool < free_at)
				free_at = cool;
			continue;
		}
		at = now;
		if (c->scope_per_key) {
			int64_t kn = atomic_load(&st->key_next_ns[i]);

			if (kn > at)
				at = kn;
		}
		if (best < 0 || at < best_at) {
			best = i;
			best_at = at;
		}
		if (!c->scope_per_key)
			break;
	}
	if (best < 0) {
		out->s_key = SLOT_ALL_COOLING;
		out->s_wait_us = (free_at - now) / 1000;
		return;
	}
	if (!c->scope_per_key) {
		at = iv > 0 ? timeline_take(&st->next_ns, now, iv, 0, max_wait)
			    : now;
	} else {
		g = 0;
		if (floor_gap > 0) {
			g = timeline_take(&st->next_ns, now, floor_gap, 0,
					  max_wait);
			if (g < 0) {
				at = -1;
				goto decided;
			}
		}
		at = iv > 0 ? timeline_take(&st->key_next_ns[best], now, iv, g,
					    max_wait)
			    : (g > now ? g : now);
	}
decided:
	if (at < 0) {
		out->s_key = SLOT_TOO_FAR;
		out->s_wait_us = max_wait / 1000 + 1;
		return;
	}
	atomic_store(&st->rr, best + 1);
	out->s_key = best;
	out->s_at_us = at / 1000;
	out->s_wait_us = (at - now) / 1000;
	out->s_deadline_ns = at;
}

void
local_cooldown(struct local_sched *l, int key, long ms)
{
	_Atomic int64_t *cool;
	int64_t till = mono_ns() + (int64_t)ms * 1000000;
	int64_t cur;

	if (l->ls_state == NULL || key < 0 || key >= CONFIG_MAX_KEYS)
		return;
	cool = &l->ls_state->key_cool_ns[key];
	cur = atomic_load(cool);
	while (cur < till && !atomic_compare_exchange_weak(cool, &cur, till))
		;
}

void
local_release(struct local_sched *l, const struct slot *sl)
{
	const struct config *c = l->ls_cfg;
	int64_t at = sl->s_deadline_ns;
	int64_t iv = (int64_t)c->interval_ms * 1000000;
	int64_t gap = (int64_t)(c->scope_per_key ? c->global_interval_ms
						 : c->interval_ms) *
		      1000000;
	int64_t want;

	if (l->ls_state == NULL || sl->s_key < 0)
		return;
	/* Only the last slot handed out goes back, as in Redis. */
	if (c->scope_per_key && iv > 0) {
		want = at + iv;
		(void)atomic_compare_exchange_strong(
			&l->ls_state->key_next_ns[sl->s_key], &want, at);
	}
	if (gap > 0) {
		want = at + gap;
		(void)atomic_compare_exchange_strong(&l->ls_state->next_ns,
						     &want, at);
	}
}
