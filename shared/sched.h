/*
 * sched.h - key rotation and slot reservation through Redis.
 *
 * One round trip per request: EVALSHA of a Lua script that, atomically and
 * on Redis' own clock, takes the next usable key round-robin (skipping keys
 * in cooldown) and reserves the next free slot on a timeline spaced
 * RATE_LIMIT_INTERVAL_MS apart: one timeline for all keys, or one per key
 * (RATE_LIMIT_SCOPE=key). Redis keys (all under one {hash tag}):
 *   <prefix>:rr    round-robin position
 *   <prefix>:slot  next free slot of the global timeline (us, Redis time)
 *   <prefix>:keys  hash: c<i> key i's cooldown end, s<i> its next slot
 * A scheduler holds one Redis connection; it is not thread-safe.
 */
#ifndef CP_SCHED_H
#define CP_SCHED_H

#include "config.h"
#include "util.h"

#include <hiredis/hiredis.h>
#include <stdint.h>

#define SLOT_ALL_COOLING (-1) /* s_key: every key cools down */
#define SLOT_TOO_FAR	 (-2) /* s_key: the wait would exceed the bound */

struct slot {
	int s_key;	       /* index into config.keys, or SLOT_* */
	int64_t s_wait_us;     /* slot - Redis' "now" when the script ran */
	int64_t s_at_us;       /* the slot, in Redis time (microseconds) */
	int64_t s_deadline_ns; /* the slot on this host's CLOCK_MONOTONIC */
	int64_t s_late_us;     /* set by the caller: how late it really sent */
};

/*
 * The offset between Redis' clock and this host's monotonic clock, so a
 * slot (Redis time) becomes a local deadline. Each reply brackets Redis'
 * "now" between the local send and receive times; the estimate is the
 * midpoint of the tightest recent bracket, and is always kept inside the
 * latest bracket. Sending at "receipt + wait" instead would make every
 * delay in delivering the reply push that request late and squeeze the
 * gap to the next one.
 */
struct clock_sync {
	int cs_valid;
	int64_t cs_offset_us; /* redis_us - local_us */
	int64_t cs_width_us;  /* uncertainty of the estimate when taken */
	int64_t cs_taken_us;  /* local time of that sample */
};

/*
 * Folds one sample into cs: Redis read redis_now_us somewhere between the
 * local times sent_us and recv_us. Returns the local time (us) of at_us.
 */
int64_t clock_sync_local(struct clock_sync *cs, int64_t sent_us,
			 int64_t recv_us, int64_t redis_now_us, int64_t at_us);

/* A Lua script and its SHA1, learnt from SCRIPT LOAD on first use. */
struct sched_script_ref {
	const char *ss_text;
	char ss_sha[41]; /* "" until learnt */
};

struct sched {
	const struct config *sc_cfg; /* borrowed */
	redisContext *sc_ctx;	     /* owned, NULL when disconnected */
	char *sc_key_rr;	     /* owned: <prefix>:rr */
	char *sc_key_slot;	     /* owned: <prefix>:slot */
	char *sc_key_state;	     /* owned: <prefix>:keys (hash) */
	char sc_interval_us[32];
	char sc_floor_us[32];
	char sc_max_wait_us[32];
	char sc_nkeys[16];
	struct sched_script_ref sc_reserve;
	struct sched_script_ref sc_cool;
	struct sched_script_ref sc_release;
	struct clock_sync sc_clock;
};

extern const char sched_script[];
extern const char sched_cool_script[];
extern const char sched_release_script[];

/*
 * Gives back a reserved slot whose request will not be sent (its client
 * left), if no later reservation was made on its timeline since.
 */
enum cp_err sched_release(struct sched *s, const struct slot *sl, char *errbuf,
			  size_t errsz);

enum cp_err sched_init(struct sched *s, const struct config *cfg);
void sched_free(struct sched *s);

/*
 * Connects to Redis and loads the reservation script ahead of the first
 * request. On CP_ERR_REDIS a reason is written to errbuf.
 */
enum cp_err sched_warm(struct sched *s, char *errbuf, size_t errsz);

/*
 * Reserves a slot. Connects (or reconnects after an error) as needed.
 * On CP_ERR_REDIS a reason is written to errbuf. CP_OK with s_key < 0
 * means nothing was reserved (see SLOT_*).
 */
enum cp_err sched_reserve(struct sched *s, struct slot *out, char *errbuf,
			  size_t errsz);

/*
 * Puts key in cooldown for ms (never shortens one): every worker on every
 * host skips it until then.
 */
enum cp_err sched_cooldown(struct sched *s, int key, long ms, char *errbuf,
			   size_t errsz);

/*
 * Decodes the script's reply {key, wait_us, at_us}; key may be
 * SLOT_ALL_COOLING or SLOT_TOO_FAR. Pure, for tests.
 */
int sched_decode(const redisReply *r, int nkeys, struct slot *out, char *errbuf,
		 size_t errsz);

#endif
