/*
 * metrics.h - the host's counters, in shared memory, and GET /metrics
 * in the Prometheus text format (version 0.0.4).
 *
 * Every worker process and thread of a host adds to one set of counters:
 * a POSIX shared memory object (metrics_open), named after the per-host
 * scheduler state ("/cerebras-proxy-metrics<layout>-<fingerprint>-<euid>")
 * and trusted as it is (owner, mode, size: shm_map_private). So any
 * worker's scrape returns the host's totals; Prometheus adds the hosts up.
 * All-zero is a valid initial state: any process may create it, none has
 * to initialise it. The counters live as long as the object, across
 * restarts of the proxy (Prometheus takes a counter's reset in its stride
 * either way).
 *
 * Recording a request costs a handful of relaxed atomic additions: no
 * lock, no system call, no allocation. Every hook a streamed chat request
 * calls took 138 ns per request in all on one thread, 534 ns with two
 * threads adding to the same counters at once (a loop of 10^6, -O2, 2-core
 * x86-64): next to a request's tens of microseconds, noise.
 *
 * Label sets are bounded: key indexes (CONFIG_MAX_KEYS), a fixed table of
 * status codes (the rest as "4xx"... or "other"), and tables of
 * METRICS_MODELS models and METRICS_CLIENTS client names interned in the
 * shared memory on first use, the rest counted under "other". Keys appear
 * only as their index, clients only by name (a token's name, or an
 * address), never a token.
 *
 * The gauges of requests in flight and streams open are kept per
 * process, in a slot keyed by its pid: a scrape adds up the slots of the
 * processes still alive, so a worker killed mid-request leaves nothing
 * behind.
 */
#ifndef CP_METRICS_H
#define CP_METRICS_H

#include "config.h"
#include "headers.h"
#include "proxy.h"
#include "respond.h"
#include "route.h"
#include "sched.h"
#include "util.h"

#include <stdint.h>

#define METRICS_MODELS	32  /* models named in the token counters */
#define METRICS_CLIENTS 64  /* clients named in the token counters */
#define METRICS_PROCS	256 /* processes with crash-proof gauges */

/* The route label of a request (what route_decide chose). */
enum metrics_route {
	METRICS_ROUTE_CHAT,
	METRICS_ROUTE_COMPLETIONS,
	METRICS_ROUTE_MODELS,
	METRICS_ROUTE_HEALTH,
	METRICS_ROUTE_READY,
	METRICS_ROUTE_METRICS,
	METRICS_ROUTE_PREFLIGHT,
	METRICS_ROUTE_OTHER,
	METRICS_NROUTES
};

/*
 * Maps this process's counters, the first time it is called in the
 * process (and again in a forked child, which takes a gauge slot of its
 * own); later calls cost one atomic load. proxy_handle and
 * proxy_refuse_saturated call it before they count, so a process maps
 * the counters with its first request, and worker_init (which tests run
 * alone) maps nothing. A failure is logged once and leaves metrics off in
 * this process: its requests are served, not counted, and its GET
 * /metrics answers 503.
 */
void metrics_open(const struct config *cfg);

/* The shared memory object's name for cfg (see above). */
void metrics_name(const struct config *cfg, char *out, size_t outsz);

/* The shared memory object's size. */
size_t metrics_size(void);

/*
 * Uses mem (metrics_size() bytes, zero-filled, the caller's) as this
 * process's counters instead of the shared object: for tests.
 */
void metrics_use(void *mem);

/* The label of route r. */
enum metrics_route metrics_route_of(enum route r);

/* --- recording: no-ops while metrics are off -------------------------- */

/* A request is being handled (requests in flight + 1). */
void metrics_request_begin(void);

/*
 * The request's end (requests in flight - 1): counted by route and the
 * status it was answered with (499: none, the client left), its duration
 * (from the accept) observed.
 */
void metrics_request_end(enum metrics_route route, int status, int64_t dur_ns);

/*
 * A request answered without being handled by a thread (the saturation
 * refusal): counted and observed as metrics_request_end, nothing in
 * flight.
 */
void metrics_request_done(enum metrics_route route, int status, int64_t dur_ns);

/*
 * One upstream attempt on key (an index): its status (0: no answer),
 * the time to its first byte (ms, < 0 unknown: not observed), how late
 * it left after its slot (us; < 0: it had no slot, as a models fetch).
 */
void metrics_upstream(int key, long status, double ttfb_ms, int64_t late_us);

/*
 * A 429 on key, and the limit that ran out: 0..HDR_NLIMITS-1
 * (hdr_limit_names), as the scheduler's settlement found it (sched_settle),
 * or -1 when it found none (counted as "unknown").
 */
void metrics_rate_limited(int key, int limit);

/* How long a request waited, from its accept until it was first sent. */
void metrics_queue_wait(int64_t ns);

/* A stream started relaying (+1) or ended (-1). */
void metrics_stream(int delta);

/*
 * The tokens an answer used (usage; < 0: unknown, not counted), on key,
 * for model, sent by client (its name; "" or NULL: unnamed, counted under
 * no client).
 */
void metrics_tokens(int key, const char *model, const char *client,
		    long long prompt, long long completion);

/* --- exposition -------------------------------------------------------- */

/*
 * Appends the host's metrics to out in the Prometheus text format: the
 * counters and histograms, the gauges of requests in flight and streams
 * open (of the processes alive), and what v shows (NULL: the scheduler
 * could not be read: only redis_up 0). CP_ERR_TOOBIG if out's cap is
 * reached; CP_ERR_IO if metrics are off.
 */
enum cp_err metrics_render(const struct config *cfg, const struct sched_view *v,
			   struct buf *out);

/* Appends s to b as a label value: \\, \" and \n escaped. */
enum cp_err metrics_escape(struct buf *b, const char *s);

/*
 * Answers GET (or HEAD) /metrics: 403 unless METRICS_ALLOW admits
 * REMOTE_ADDR, 503 while metrics are off in this process.
 */
void metrics_handle(struct worker *w, const struct request_io *io,
		    struct resp *r);

#endif
