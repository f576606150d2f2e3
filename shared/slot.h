/*
 * slot.h - a reserved slot: which key a request goes out on, and when,
 * and what the reservation charged to its organisation's budgets.
 *
 * Made by either scheduler (Redis, or the per-host one in shared memory)
 * and used by the request path; see sched.h.
 */
#ifndef CP_SLOT_H
#define CP_SLOT_H

#include "headers.h"

#include <stdint.h>

#define SLOT_ALL_RESTING (-1) /* s_key: no key can take it in time */
#define SLOT_TOO_FAR	 (-2) /* s_key: the timelines are full that far */
#define SLOT_POLL	 (-3) /* s_key: a probe is out; ask again later */
#define SLOT_CLIENT	 (-4) /* s_key: over its client's limit (s_why) */

/* s_why: what set the slot (0..5: a budget, in hdr_limit_names order). */
#define SLOT_WHY_NONE	     (-1) /* sent at once */
#define SLOT_WHY_SPACING     6	  /* the interval between requests */
#define SLOT_WHY_DISABLED    7	  /* keys disabled (401/403) */
#define SLOT_WHY_REST	     8	  /* a rest after a 429 that named no limit */
#define SLOT_WHY_PROBE	     9	  /* waiting for a probe's answer */
#define SLOT_WHY_CLIENT_RATE 10	  /* the client's requests per window */
#define SLOT_WHY_CLIENT_CONC 11	  /* the client's requests in flight */

/*
 * A client's own limits (CLIENT_RATE_LIMIT, CLIENT_MAX_CONCURRENT, or its
 * line in PROXY_TOKENS_FILE). Kept by the scheduler, across hosts, in the
 * reservation's round trip; 0 = no such limit.
 */
struct sched_client {
	const char *sc_id;  /* opaque, [0-9a-f]{16}: safe in a key name */
	long sc_rate;	    /* requests per window, 0: none */
	long sc_window_ms;  /* that window */
	long sc_concurrent; /* requests in flight at once, 0: none */
};

/* What a request asks of the scheduler. */
struct sched_request {
	const char *sr_model; /* the body's model; "" if unknown */
	long long sr_tokens;  /* its token estimate: the charge */
	/* its client's limits; NULL: none (sr_seat unused) */
	const struct sched_client *sr_client;
	/*
	 * Unique per request (not per attempt), [0-9a-f]{16}: its seat among
	 * its client's requests in flight, taken by the first reservation
	 * (or poll) and given back by sched_client_done().
	 */
	char sr_seat[17];
	int sr_attempt; /* 0 the first: only it counts to the client's rate */
};

struct slot {
	int s_key;	       /* index into config.keys, or SLOT_* */
	int s_local;	       /* 1: from the per-host scheduler */
	int s_why;	       /* SLOT_WHY_* or a budget index */
	int s_probe;	       /* 1: the probe of its organisation and model */
	int s_first;	       /* 1: none of its budget's requests was out */
	int64_t s_wait_us;     /* slot - the scheduler's "now" */
	int64_t s_at_us;       /* the slot on the scheduler's clock (us) */
	int64_t s_deadline_ns; /* the slot on this host's CLOCK_MONOTONIC */
	int64_t s_late_us;     /* set by the caller: how late it really sent */
	/* how far s_deadline_ns may be off the slot: 0 on the host's clock */
	int64_t s_clock_us;
	/* The budget counters after this charge (see shared/lua/settle.lua). */
	long long s_cq, s_ct, s_rt;
	const struct sched_request *s_req; /* borrowed: what was charged */
};

/* What an upstream answer tells the scheduler (see sched_settle). */
enum sched_settle_mode {
	SETTLE_ANSWER,	/* the answer ended */
	SETTLE_HEADERS, /* a probe's headers came (its usage follows) */
	SETTLE_USAGE,	/* a probe's answer ended: only its usage is new */
};

struct sched_outcome {
	enum sched_settle_mode so_mode;
	long so_status;	 /* the upstream's HTTP status, 0 if none */
	long so_rest_ms; /* a 429's Retry-After or reset time; -1 none */
	/* the answer's limits (hdr_limits), NULL if no answer came */
	const struct hdr_limit *so_limits;
	int64_t so_hdr_ns; /* when the headers came (mono_ns) */
	long long so_used; /* tokens the answer used (usage), -1 unknown */
};

const char *slot_why_name(int why); /* "tokens-minute", "spacing", "-"... */

#endif
