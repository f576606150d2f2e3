/*
 * pool.c - one worker process: an acceptor thread that takes each
 * connection the web server makes as soon as it arrives, and a pool of
 * worker threads that grows with the requests in flight and shrinks when
 * they are gone.
 *
 * - The acceptor answers what needs no slot itself (GET /, OPTIONS, any
 *   request that is not a POST), so health checks and preflights never
 *   wait behind streams. It hands each POST to the most recently idle
 *   worker thread (so the others stay idle and can retire).
 * - With no idle thread it starts one, up to WORKER_MAX_THREADS, and keeps
 *   one spare starting or idle, so a request never waits for a thread's
 *   set-up (its Redis connection and TLS handshake are made before it
 *   takes a request, hence before any slot).
 * - At the cap a POST waits in the process's queue: counted, logged, and
 *   answered 429 proxy_saturated once it has waited QUEUE_MAX_WAIT_MS.
 *   Only when that queue is full as well does the acceptor stop accepting
 *   (connections then wait in the listen backlog, for another process or
 *   a free thread; logged too).
 * - Threads above WORKER_THREADS that stay idle for WORKER_IDLE_TIMEOUT_MS
 *   end.
 * - The main thread takes SIGTERM/SIGINT, answers queued requests whose
 *   wait has run out, and drains the pool on a stop.
 *
 * With WORKER_MAX_THREADS=1 (and under mod_fcgid) there is no pool: the
 * acceptor serves every request itself, one at a time.
 */
#include "pool.h"

#include "io.h"
#include "log.h"
#include "proxy.h"
#include "util.h"

#include <errno.h>
#include <fcgiapp.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAKE_SIGNAL SIGUSR2
/* Thread stacks: only touched pages cost memory; OpenSSL needs some. */
#define THREAD_STACK (512 * 1024)
/* How often the main thread looks at the queue's deadlines. */
#define TICK_NS (200 * 1000000LL)
/* The same warning at most this often (the count says how many). */
#define WARN_EVERY_NS (10 * 1000000000LL)
/*
 * At the thread cap the acceptor waits this long for a thread to come
 * free before it takes the next connection, so that the web server's
 * connections go to another process with a free thread, if there is one.
 */
#define CAP_PAUSE_NS (50 * 1000000LL)
/* accept() out of descriptors or memory: pause, doubling up to 1 s. */
#define ACCEPT_PAUSE_MIN_NS (10 * 1000000LL)
#define ACCEPT_PAUSE_MAX_NS (1000 * 1000000LL)

/* Set once a stop is requested; a lock-free atomic is safe in a handler. */
static atomic_int stop_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_requested, 1);
}

static void
on_wake_signal(int sig)
{
	(void)sig; /* only there to interrupt accept() */
}

/*
 * SIGTERM/SIGINT set stop_requested, without SA_RESTART so that a blocked
 * accept() returns. Installed before FCGX_Init, which then keeps it.
 */
static int
install_stop_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) != 0 ||
	    sigaction(SIGINT, &sa, NULL) != 0) {
		log_warn("sigaction");
		return -1;
	}
	return 0;
}

/* One accepted connection, from accept() to its last write. */
struct conn {
	FCGX_Request c_req;
	int64_t c_accepted_ns;
	struct conn *c_next; /* in the queue or the free list */
};

/* A worker thread, as the pool sees it. */
struct wthread {
	pthread_cond_t t_cv;	/* signalled when t_job is set */
	struct conn *t_job;	/* handed over by the acceptor */
	struct wthread *t_prev; /* the idle list, most recent first */
	struct wthread *t_next;
};

/* A warning given at most every WARN_EVERY_NS, with a count. */
struct warn_limit {
	int64_t wl_last_ns;
	unsigned long wl_count;	 /* occurrences in all */
	unsigned long wl_logged; /* wl_count when last logged */
};

/* The process's pool; everything below p_lock is guarded by it. */
static struct pool {
	const struct config *p_cfg;
	int p_listen_fd;
	int p_inline;	 /* WORKER_MAX_THREADS=1: the acceptor serves all */
	long p_conn_max; /* in flight and queued together */
	pthread_attr_t p_attr;
	pthread_condattr_t p_cattr;
	pthread_t p_acceptor;
	atomic_int p_acceptor_done;
	atomic_int p_acceptor_failed;

	pthread_mutex_t p_lock;
	int p_threads;	/* worker threads alive, starting ones included */
	int p_starting; /* not yet ready for a request */
	int p_exiting;	/* ended, still letting go of their connections */
	unsigned long p_ended; /* worker threads that have ended, in all */
	int p_idle;	       /* on the idle list */
	struct wthread *p_idle_head;
	struct wthread *p_idle_tail;
	struct conn *p_q_head; /* accepted, waiting for a thread */
	struct conn *p_q_tail;
	int p_qlen;
	struct conn *p_free;   /* conns to reuse */
	long p_conns;	       /* conns allocated and not free */
	pthread_cond_t p_room; /* a conn or a thread came free */
	int p_stopping;
	struct warn_limit p_cap_warn;	 /* a POST waited for a thread */
	struct warn_limit p_full_warn;	 /* the acceptor paused */
	struct warn_limit p_spawn_warn;	 /* a thread could not start */
	struct warn_limit p_accept_warn; /* accept() ran out of something */
	struct warn_limit p_refuse_warn; /* queued past its wait */
} pool = {.p_lock = PTHREAD_MUTEX_INITIALIZER};

/*
 * Counts an occurrence; returns 1 (with the count since the last log in
 * *since) when it is time to log it. Call with p_lock held.
 */
static int
warn_due(struct warn_limit *wl, unsigned long *since)
{
	int64_t now = mono_ns();

	wl->wl_count++;
	if (wl->wl_last_ns != 0 && now - wl->wl_last_ns < WARN_EVERY_NS)
		return 0;
	wl->wl_last_ns = now;
	*since = wl->wl_count - wl->wl_logged;
	wl->wl_logged = wl->wl_count;
	return 1;
}

/* The CLOCK_MONOTONIC time ns from now, for pthread_cond_timedwait. */
static struct timespec
deadline_in(int64_t ns)
{
	int64_t at = mono_ns() + ns;
	struct timespec ts;

	ts.tv_sec = (time_t)(at / 1000000000);
	ts.tv_nsec = (long)(at % 1000000000);
	return ts;
}

/* The idle list: push at the head, take from the head, retire the tail. */
static void
idle_push(struct pool *p, struct wthread *t)
{
	t->t_prev = NULL;
	t->t_next = p->p_idle_head;
	if (p->p_idle_head != NULL)
		p->p_idle_head->t_prev = t;
	else
		p->p_idle_tail = t;
	p->p_idle_head = t;
	p->p_idle++;
}

static void
idle_remove(struct pool *p, struct wthread *t)
{
	if (t->t_prev != NULL)
		t->t_prev->t_next = t->t_next;
	else
		p->p_idle_head = t->t_next;
	if (t->t_next != NULL)
		t->t_next->t_prev = t->t_prev;
	else
		p->p_idle_tail = t->t_prev;
	t->t_prev = t->t_next = NULL;
	p->p_idle--;
}

static void
queue_put(struct pool *p, struct conn *c)
{
	c->c_next = NULL;
	if (p->p_q_tail != NULL)
		p->p_q_tail->c_next = c;
	else
		p->p_q_head = c;
	p->p_q_tail = c;
	p->p_qlen++;
}

static struct conn *
queue_take(struct pool *p)
{
	struct conn *c = p->p_q_head;

	if (c == NULL)
		return NULL;
	p->p_q_head = c->c_next;
	if (p->p_q_head == NULL)
		p->p_q_tail = NULL;
	p->p_qlen--;
	c->c_next = NULL;
	return c;
}

/* Every thread the process may have is busy. Call with p_lock held. */
static int
at_cap(const struct pool *p)
{
	return p->p_idle == 0 && p->p_starting == 0 &&
	       p->p_threads >= p->p_cfg->max_threads;
}

/*
 * A conn for the next accept, or NULL once a stop is requested. While
 * p_conn_max are in use it waits: new connections then stay in the
 * listen backlog. At the thread cap it first waits up to CAP_PAUSE_NS
 * for a thread, so that connections may go to another process.
 */
static struct conn *
conn_get(struct pool *p)
{
	struct conn *c = NULL;
	struct timespec ts;
	unsigned long since;
	int rc;

	pthread_mutex_lock(&p->p_lock);
	if (p->p_conns >= p->p_conn_max && warn_due(&p->p_full_warn, &since))
		log_warnx("%ld requests in this process (WORKER_MAX_THREADS="
			  "%ld serving, as many queued): new connections wait "
			  "in the listen backlog; raise WORKER_MAX_THREADS or "
			  "add processes or hosts (%lu times)",
			  p->p_conns, p->p_cfg->max_threads, since);
	while (p->p_conns >= p->p_conn_max && !atomic_load(&stop_requested)) {
		/* Short waits: a stop is seen soon. */
		ts = deadline_in(100 * 1000000LL);
		rc = pthread_cond_timedwait(&p->p_room, &p->p_lock, &ts);
		if (rc != 0 && rc != ETIMEDOUT)
			break;
	}
	if (atomic_load(&stop_requested) || p->p_conns >= p->p_conn_max) {
		pthread_mutex_unlock(&p->p_lock);
		return NULL;
	}
	if (!p->p_inline && at_cap(p)) {
		ts = deadline_in(CAP_PAUSE_NS);
		rc = 0;
		while (at_cap(p) && rc == 0 && !atomic_load(&stop_requested))
			rc = pthread_cond_timedwait(&p->p_room, &p->p_lock,
						    &ts);
	}
	c = p->p_free;
	if (c != NULL)
		p->p_free = c->c_next;
	p->p_conns++;
	pthread_mutex_unlock(&p->p_lock);
	if (c != NULL)
		return c;
	c = calloc(1, sizeof(*c));
	if (c == NULL || FCGX_InitRequest(&c->c_req, p->p_listen_fd,
					  FCGI_FAIL_ACCEPT_ON_INTR) != 0) {
		log_warnx("out of memory for a connection");
		free(c);
		pthread_mutex_lock(&p->p_lock);
		p->p_conns--;
		pthread_mutex_unlock(&p->p_lock);
		return NULL;
	}
	return c;
}

/* c's connection is closed: it may serve the next one. */
static void
conn_put(struct pool *p, struct conn *c)
{
	pthread_mutex_lock(&p->p_lock);
	c->c_next = p->p_free;
	p->p_free = c;
	p->p_conns--;
	pthread_cond_signal(&p->p_room);
	pthread_mutex_unlock(&p->p_lock);
}

/* Closes the connection of a request that has been answered. */
static void
conn_close(FCGX_Request *req)
{
	/*
	 * Input read to its end: the web server sends nothing more, so close
	 * at once, without libfcgi's shutdown and wait for the server's EOF
	 * (a sleep and a wake-up per request). A connection the web server
	 * wants kept (nginx fastcgi_keep_conn) is closed as well: the next
	 * request on it would be read by the accepting thread, which would
	 * wait there instead of accepting.
	 */
	if (req->keepConnection ||
	    (FCGX_HasSeenEOF(req->in) == EOF && FCGX_GetError(req->in) == 0))
		(void)FCGX_Detach(req);
	else
		(void)FCGX_Attach(req);
	req->keepConnection = 0;
	FCGX_Finish_r(req);
}

/* Serves the request on c with w, start to finish. */
static void
serve(struct worker *w, struct conn *c)
{
	struct request_io io;

	fcgi_io_init(&io, &c->c_req);
	io.io_accepted_ns = c->c_accepted_ns;
	proxy_handle(w, &io);
	conn_close(&c->c_req);
}

static void *worker_thread(void *arg);

/*
 * Starts one worker thread. Call with p_lock held; it is released while
 * the thread is created. Returns 0, or -1 (logged) if it could not start.
 */
static int
spawn_one(struct pool *p)
{
	struct wthread *t;
	unsigned long since;
	int rc = ENOMEM;

	p->p_threads++;
	p->p_starting++;
	pthread_mutex_unlock(&p->p_lock);
	t = calloc(1, sizeof(*t));
	if (t != NULL) {
		rc = pthread_cond_init(&t->t_cv, &p->p_cattr);
		if (rc == 0) {
			rc = pthread_create(&(pthread_t){0}, &p->p_attr,
					    worker_thread, t);
			if (rc != 0)
				(void)pthread_cond_destroy(&t->t_cv);
		}
		if (rc != 0)
			free(t);
	}
	pthread_mutex_lock(&p->p_lock);
	if (rc == 0)
		return 0;
	p->p_threads--;
	p->p_starting--;
	if (warn_due(&p->p_spawn_warn, &since))
		log_warnx("could not start a thread (%s) with %d running; "
			  "requests wait for one (%lu times)",
			  strerror(rc), p->p_threads, since);
	return -1;
}

/*
 * Starts worker threads until one per queued request plus a spare is
 * starting or idle, within WORKER_MAX_THREADS. Call with p_lock held.
 */
static void
grow(struct pool *p)
{
	while (p->p_qlen + 1 > p->p_idle + p->p_starting &&
	       p->p_threads < p->p_cfg->max_threads && !p->p_stopping)
		if (spawn_one(p) != 0)
			return;
}

/*
 * Gives c to a worker thread: the most recently idle one, else the queue
 * (starting threads as needed). Returns with p_lock released.
 */
static void
dispatch(struct pool *p, struct conn *c)
{
	struct wthread *t;
	unsigned long since;

	pthread_mutex_lock(&p->p_lock);
	t = p->p_idle_head;
	if (t != NULL) {
		idle_remove(p, t);
		t->t_job = c;
		pthread_cond_signal(&t->t_cv);
	} else {
		queue_put(p, c);
		if (p->p_threads >= p->p_cfg->max_threads &&
		    p->p_starting < p->p_qlen &&
		    warn_due(&p->p_cap_warn, &since))
			log_warnx("all %d threads busy (WORKER_MAX_THREADS): "
				  "%d requests wait for one, for up to "
				  "QUEUE_MAX_WAIT_MS; raise WORKER_MAX_THREADS "
				  "or add processes or hosts (%lu times)",
				  p->p_threads, p->p_qlen, since);
	}
	grow(p);
	pthread_mutex_unlock(&p->p_lock);
}

/*
 * Waits on t's condition until a job is handed over, the pool stops, or
 * t may retire. Returns the job, or NULL if t is to end. Call with p_lock
 * held.
 */
static struct conn *
wait_job(struct pool *p, struct wthread *t)
{
	const struct config *cfg = p->p_cfg;
	struct timespec ts;
	struct conn *c;
	int rc;

	for (;;) {
		c = queue_take(p);
		if (c != NULL)
			return c;
		if (p->p_stopping)
			return NULL;
		ts = deadline_in(cfg->thread_idle_ms * 1000000LL);
		t->t_job = NULL;
		idle_push(p, t);
		pthread_cond_signal(&p->p_room); /* the acceptor may wait */
		rc = 0;
		while (t->t_job == NULL && !p->p_stopping && rc == 0)
			rc = pthread_cond_timedwait(&t->t_cv, &p->p_lock, &ts);
		if (t->t_job != NULL) {
			c = t->t_job; /* dispatch took t off the list */
			t->t_job = NULL;
			return c;
		}
		idle_remove(p, t);
		if (p->p_stopping)
			continue; /* serve what is queued, then end */
		/* Idle this long: end, unless the pool is at its minimum. */
		if (rc == ETIMEDOUT && p->p_threads > cfg->threads)
			return NULL;
		if (rc != 0 && rc != ETIMEDOUT)
			return NULL;
	}
}

static void *
worker_thread(void *arg)
{
	struct wthread *t = arg;
	struct pool *p = &pool;
	struct worker w;
	struct conn *c;
	char errbuf[256];
	unsigned long since;
	int ok;

	(void)pthread_detach(pthread_self());
	(void)pthread_setname_np(pthread_self(), "cp-worker");
	ok = worker_init(&w, p->p_cfg, errbuf, sizeof(errbuf)) == CP_OK;
	if (ok)
		worker_warm(&w);
	pthread_mutex_lock(&p->p_lock);
	p->p_starting--;
	if (!ok) {
		if (warn_due(&p->p_spawn_warn, &since))
			log_warnx("worker setup failed: %s (%lu times)", errbuf,
				  since);
	} else {
		while ((c = wait_job(p, t)) != NULL) {
			pthread_mutex_unlock(&p->p_lock);
			serve(&w, c);
			conn_put(p, c);
			pthread_mutex_lock(&p->p_lock);
		}
	}
	/* Counted out at once: the next idle thread decides with it. */
	p->p_threads--;
	p->p_exiting++;
	pthread_mutex_unlock(&p->p_lock);
	if (ok)
		worker_free(&w);
	(void)pthread_cond_destroy(&t->t_cv);
	free(t);
	/* Last: the drain waits for this count to reach zero. */
	pthread_mutex_lock(&p->p_lock);
	p->p_exiting--;
	p->p_ended++;
	pthread_mutex_unlock(&p->p_lock);
	return NULL;
}

/*
 * The acceptor: takes every connection at once; serves what needs no slot
 * (everything under p_inline), hands the rest to the pool.
 */
static void *
acceptor_thread(void *arg)
{
	struct pool *p = arg;
	struct worker w;
	struct conn *c;
	struct timespec ts;
	sigset_t wake;
	const char *method;
	char errbuf[256];
	int64_t pause_ns = 0;
	unsigned long since = 0;
	int rc;

	(void)pthread_setname_np(pthread_self(), "cp-accept");
	if (worker_init(&w, p->p_cfg, errbuf, sizeof(errbuf)) != CP_OK) {
		log_warnx("worker setup failed: %s", errbuf);
		atomic_store(&p->p_acceptor_failed, 1);
		atomic_store(&p->p_acceptor_done, 1);
		return NULL;
	}
	if (p->p_inline)
		worker_warm(&w);
	/*
	 * The wake signal is let in only while waiting for a connection:
	 * there it interrupts accept() once a stop is requested; during a
	 * request it stays pending, so a request in progress is finished.
	 */
	sigemptyset(&wake);
	sigaddset(&wake, WAKE_SIGNAL);
	while ((c = conn_get(p)) != NULL) {
		(void)pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
		if (atomic_load(&stop_requested)) {
			(void)pthread_sigmask(SIG_BLOCK, &wake, NULL);
			conn_put(p, c);
			break;
		}
		rc = FCGX_Accept_r(&c->c_req);
		(void)pthread_sigmask(SIG_BLOCK, &wake, NULL);
		if (rc < 0) {
			conn_put(p, c);
			if (rc == -EINTR || atomic_load(&stop_requested))
				continue;
			if (rc != -EMFILE && rc != -ENFILE && rc != -ENOBUFS &&
			    rc != -ENOMEM) {
				log_warnx("accept failed: %s; the process "
					  "stops accepting",
					  strerror(-rc));
				atomic_store(&p->p_acceptor_failed, 1);
				break;
			}
			/* Out of descriptors or memory: a pause, not an end. */
			pause_ns = pause_ns == 0 ? ACCEPT_PAUSE_MIN_NS
				   : pause_ns * 2 > ACCEPT_PAUSE_MAX_NS
					   ? ACCEPT_PAUSE_MAX_NS
					   : pause_ns * 2;
			pthread_mutex_lock(&p->p_lock);
			rc = warn_due(&p->p_accept_warn, &since) ? rc : 0;
			pthread_mutex_unlock(&p->p_lock);
			if (rc != 0)
				log_warnx("accept: %s with %ld requests in "
					  "this process; retrying in %lld ms "
					  "(raise the open-file limit, "
					  "LimitNOFILE) (%lu times)",
					  strerror(-rc), p->p_conn_max,
					  (long long)(pause_ns / 1000000),
					  since);
			ts.tv_sec = (time_t)(pause_ns / 1000000000);
			ts.tv_nsec = (long)(pause_ns % 1000000000);
			(void)nanosleep(&ts, NULL);
			continue;
		}
		pause_ns = 0;
		c->c_accepted_ns = mono_ns();
		method = FCGX_GetParam("REQUEST_METHOD", c->c_req.envp);
		if (p->p_inline || method == NULL ||
		    strcmp(method, "POST") != 0) {
			serve(&w, c);
			conn_put(p, c);
		} else {
			dispatch(p, c);
		}
	}
	worker_free(&w);
	atomic_store(&p->p_acceptor_done, 1);
	return NULL;
}

/*
 * Answers the queued requests that have waited QUEUE_MAX_WAIT_MS for a
 * thread with 429 proxy_saturated, and lets go of those whose client left.
 */
static void
sweep(struct pool *p)
{
	const struct config *cfg = p->p_cfg;
	struct conn *c, **pp, *expired = NULL, *gone = NULL;
	struct request_io io;
	int64_t now = mono_ns();
	int64_t max_ns = cfg->queue_max_wait_ms * 1000000LL;
	unsigned long since = 0;
	int n = 0;
	int log_it = 0;

	pthread_mutex_lock(&p->p_lock);
	for (pp = &p->p_q_head; (c = *pp) != NULL;) {
		fcgi_io_init(&io, &c->c_req);
		if (io.io_gone(io.io_ctx)) {
			*pp = c->c_next;
			c->c_next = gone;
			gone = c;
		} else if (now - c->c_accepted_ns >= max_ns) {
			*pp = c->c_next;
			c->c_next = expired;
			expired = c;
			n++;
		} else {
			pp = &c->c_next;
			continue;
		}
		p->p_qlen--;
	}
	p->p_q_tail = NULL;
	for (c = p->p_q_head; c != NULL; c = c->c_next)
		p->p_q_tail = c;
	if (n > 0)
		log_it = warn_due(&p->p_refuse_warn, &since);
	pthread_mutex_unlock(&p->p_lock);
	if (log_it)
		log_warnx("%d request(s) found no free thread within "
			  "QUEUE_MAX_WAIT_MS=%ld (WORKER_MAX_THREADS=%ld): "
			  "answered 429 proxy_saturated (%lu times)",
			  n, cfg->queue_max_wait_ms, cfg->max_threads, since);
	while ((c = expired) != NULL) {
		expired = c->c_next;
		fcgi_io_init(&io, &c->c_req);
		io.io_accepted_ns = c->c_accepted_ns;
		proxy_refuse_saturated(cfg, &io);
		conn_close(&c->c_req);
		conn_put(p, c);
	}
	/* Their clients left while they waited: nothing to answer. */
	while ((c = gone) != NULL) {
		gone = c->c_next;
		conn_close(&c->c_req);
		conn_put(p, c);
	}
}

/*
 * Once threads have stopped ending (a tick without one after some did),
 * gives the memory their requests used back to the system: glibc keeps
 * freed memory in its per-thread arenas otherwise, and the process would
 * stay at its peak after a burst.
 */
static void
trim_after_retirement(struct pool *p, unsigned long *seen, int *pending)
{
	unsigned long ended;

	pthread_mutex_lock(&p->p_lock);
	ended = p->p_ended;
	pthread_mutex_unlock(&p->p_lock);
	if (ended != *seen) {
		*seen = ended;
		*pending = 1;
	} else if (*pending) {
		*pending = 0;
		(void)malloc_trim(0);
	}
}

/*
 * After a stop request: wakes the acceptor until it has ended, lets the
 * worker threads finish what they hold and what is queued, or exits the
 * process once DRAIN_TIMEOUT_MS have passed with requests still running.
 */
static void
drain(struct pool *p)
{
	const struct config *cfg = p->p_cfg;
	struct timespec drain_tick = {0, 20 * 1000000L};
	struct wthread *t;
	int64_t deadline;
	int left;

	atomic_store(&stop_requested, 1);
	deadline = mono_ns() + cfg->drain_timeout_ms * 1000000LL;
	for (;;) {
		if (!atomic_load(&p->p_acceptor_done))
			(void)pthread_kill(p->p_acceptor, WAKE_SIGNAL);
		pthread_mutex_lock(&p->p_lock);
		p->p_stopping = 1;
		for (t = p->p_idle_head; t != NULL; t = t->t_next)
			pthread_cond_signal(&t->t_cv);
		pthread_cond_broadcast(&p->p_room);
		left = p->p_threads + p->p_exiting + p->p_qlen;
		if (atomic_load(&p->p_acceptor_done) && p->p_threads == 0 &&
		    p->p_qlen > 0)
			left = p->p_exiting; /* none left to serve them */
		pthread_mutex_unlock(&p->p_lock);
		if (left == 0 && atomic_load(&p->p_acceptor_done))
			break;
		if (mono_ns() >= deadline) {
			log_warnx("%d request(s) still running after "
				  "DRAIN_TIMEOUT_MS=%ld; exiting anyway",
				  left, cfg->drain_timeout_ms);
			/* Now, while those threads still use cfg and curl. */
			_exit(0);
		}
		(void)nanosleep(&drain_tick, NULL);
	}
	/* The acceptor has ended; collect it (it is not detached). */
	(void)pthread_join(p->p_acceptor, NULL);
}

/* The pool's attributes and limits, before any thread runs. */
static int
pool_setup(struct pool *p, const struct config *cfg, int listen_fd)
{
	int rc;

	p->p_cfg = cfg;
	p->p_listen_fd = listen_fd;
	p->p_inline = cfg->max_threads <= 1;
	/* As many may wait for a thread as threads serve. */
	p->p_conn_max = p->p_inline ? 1 : 2 * cfg->max_threads;
	rc = pthread_attr_init(&p->p_attr);
	if (rc == 0) {
		rc = pthread_attr_setstacksize(&p->p_attr, THREAD_STACK);
		if (rc != 0)
			log_warnx("pthread_attr_setstacksize: %s; default "
				  "stacks",
				  strerror(rc));
		rc = 0;
	}
	if (rc == 0)
		rc = pthread_condattr_init(&p->p_cattr);
	if (rc == 0)
		rc = pthread_condattr_setclock(&p->p_cattr, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(&p->p_room, &p->p_cattr);
	if (rc != 0) {
		log_warnx("thread attributes: %s", strerror(rc));
		return -1;
	}
	return 0;
}

int
worker_main(const struct config *cfg, int listen_fd)
{
	struct pool *p = &pool;
	struct sigaction sa;
	sigset_t sigs;
	siginfo_t si;
	struct timespec tick = {0, TICK_NS};
	struct timespec slow_tick = {1, 0};
	unsigned long ended_seen = 0;
	int trim_pending = 0;
	int rc;

	/*
	 * Every thread inherits this mask: SIGTERM/SIGINT reach only the
	 * main thread's sigtimedwait, the wake signal only the acceptor,
	 * which unblocks it around accept().
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, WAKE_SIGNAL);
	rc = pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	if (rc != 0) {
		log_warnx("pthread_sigmask: %s", strerror(rc));
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_wake_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(WAKE_SIGNAL, &sa, NULL) != 0) {
		log_warn("sigaction");
		return 1;
	}
	/* Our own SIGTERM disposition first, so FCGX_Init keeps it. */
	if (install_stop_handler() != 0)
		return 1;
	if (FCGX_Init() != 0) {
		log_warnx("FCGX_Init failed");
		return 1;
	}
	if (pool_setup(p, cfg, listen_fd) != 0)
		return 1;
	rc = pthread_create(&p->p_acceptor, &p->p_attr, acceptor_thread, p);
	if (rc != 0) {
		log_warnx("could not start the accepting thread: %s",
			  strerror(rc));
		return 1;
	}
	/* The minimum, warm before the first request (one spare if 1). */
	if (!p->p_inline) {
		pthread_mutex_lock(&p->p_lock);
		while (p->p_threads < cfg->threads)
			if (spawn_one(p) != 0)
				break;
		pthread_mutex_unlock(&p->p_lock);
	}
	if (p->p_inline)
		log_info("Initialized with %d API keys.", cfg->nkeys);
	else
		log_info("Initialized with %d API keys. %ld to %ld threads.",
			 cfg->nkeys, cfg->threads, cfg->max_threads);
	sigdelset(&sigs, WAKE_SIGNAL);
	while (!atomic_load(&p->p_acceptor_done)) {
		if (sigtimedwait(&sigs, &si,
				 p->p_inline ? &slow_tick : &tick) >= 0)
			break;
		if (!p->p_inline) {
			sweep(p);
			trim_after_retirement(p, &ended_seen, &trim_pending);
		}
	}
	drain(p);
	return atomic_load(&p->p_acceptor_failed) ? 1 : 0;
}
