/*
 * pool.c - one worker process: cfg->threads accepting threads, each with
 * its own worker (Redis connection, libcurl handle) and FCGX_Request, and
 * the main thread waiting for SIGTERM/SIGINT to drain them.
 */
#include "pool.h"

#include "io.h"
#include "log.h"
#include "proxy.h"
#include "util.h"

#include <errno.h>
#include <fcgiapp.h>
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

/*
 * One accepting thread: its own worker (Redis connection, libcurl handle)
 * and its own FCGX_Request; FCGX_Accept_r is thread-safe on Linux, so the
 * threads accept on the shared socket without a lock (see NOTES on libfcgi).
 */
struct acceptor {
	pthread_t a_tid;
	const struct config *a_cfg;
	int a_listen_fd;
	int a_running; /* created and not yet joined */
};

static void *
acceptor_main(void *arg)
{
	struct acceptor *a = arg;
	struct worker w;
	FCGX_Request req;
	struct request_io io;
	sigset_t wake;
	char errbuf[256];
	int rc;

	if (worker_init(&w, a->a_cfg, errbuf, sizeof(errbuf)) != CP_OK) {
		log_warnx("worker setup failed: %s", errbuf);
		return NULL;
	}
	if (FCGX_InitRequest(&req, a->a_listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) !=
	    0) {
		log_warnx("FCGX_InitRequest failed");
		worker_free(&w);
		return NULL;
	}
	worker_warm(&w);
	fcgi_io_init(&io, &req);
	/*
	 * The wake signal is let in only while waiting for a connection:
	 * there it interrupts accept() once a stop is requested; during a
	 * request it stays pending, so a stream in progress is finished.
	 */
	sigemptyset(&wake);
	sigaddset(&wake, WAKE_SIGNAL);
	while (!atomic_load(&stop_requested)) {
		(void)pthread_sigmask(SIG_UNBLOCK, &wake, NULL);
		if (atomic_load(&stop_requested)) {
			(void)pthread_sigmask(SIG_BLOCK, &wake, NULL);
			break;
		}
		rc = FCGX_Accept_r(&req);
		(void)pthread_sigmask(SIG_BLOCK, &wake, NULL);
		if (rc == -EINTR)
			continue;
		if (rc < 0) {
			if (!atomic_load(&stop_requested))
				log_warnx("accept failed (%d), thread exits",
					  rc);
			break;
		}
		proxy_handle(&w, &io);
		/*
		 * Input read to its end: the web server sends nothing more,
		 * so close at once, without libfcgi's shutdown and wait for
		 * the server's EOF (a sleep and a wake-up per request).
		 */
		if (FCGX_HasSeenEOF(req.in) == EOF &&
		    FCGX_GetError(req.in) == 0)
			(void)FCGX_Detach(&req);
		else
			(void)FCGX_Attach(&req); /* a kept connection's */
		FCGX_Finish_r(&req);
	}
	FCGX_Free(&req, 1);
	worker_free(&w);
	return NULL;
}

/*
 * Joins every acceptor that has ended; returns how many still run. No
 * absolute clock deadline (pthread_timedjoin_np): a process whose clock is
 * faked or stepped would block here and miss SIGTERM.
 */
static int
join_ended(struct acceptor *as, int n)
{
	int running = 0;
	int i;

	for (i = 0; i < n; i++) {
		if (!as[i].a_running)
			continue;
		if (pthread_tryjoin_np(as[i].a_tid, NULL) == 0)
			as[i].a_running = 0;
		else
			running++;
	}
	return running;
}

/*
 * Starts the n acceptors of as; returns how many started (each logged
 * failure leaves the rest unstarted).
 */
static int
start_acceptors(struct acceptor *as, int n, const struct config *cfg,
		int listen_fd)
{
	pthread_attr_t attr;
	int running = 0;
	int rc;
	int i;

	rc = pthread_attr_init(&attr);
	if (rc != 0) {
		log_warnx("pthread_attr_init: %s", strerror(rc));
		return 0;
	}
	rc = pthread_attr_setstacksize(&attr, THREAD_STACK);
	if (rc != 0)
		log_warnx("pthread_attr_setstacksize: %s; default stacks",
			  strerror(rc));
	for (i = 0; i < n; i++) {
		as[i].a_cfg = cfg;
		as[i].a_listen_fd = listen_fd;
		rc = pthread_create(&as[i].a_tid, &attr, acceptor_main, &as[i]);
		if (rc != 0) {
			log_warnx("could not start thread %d of %d: %s", i + 1,
				  n, strerror(rc));
			break;
		}
		as[i].a_running = 1;
		running++;
	}
	(void)pthread_attr_destroy(&attr);
	return running;
}

/*
 * After a stop request: wakes the acceptors still waiting in accept()
 * until every one of the running has ended, or exits the process once
 * DRAIN_TIMEOUT_MS have passed with requests still running.
 */
static void
drain(struct acceptor *as, int n, int running, const struct config *cfg)
{
	struct timespec drain_tick = {0, 20 * 1000000L};
	int64_t deadline;
	int i;

	atomic_store(&stop_requested, 1);
	deadline = mono_ns() + cfg->drain_timeout_ms * 1000000LL;
	while (running > 0) {
		for (i = 0; i < n; i++)
			if (as[i].a_running)
				(void)pthread_kill(as[i].a_tid, WAKE_SIGNAL);
		(void)nanosleep(&drain_tick, NULL);
		running = join_ended(as, n);
		if (running > 0 && mono_ns() >= deadline) {
			log_warnx("%d request(s) still running after "
				  "DRAIN_TIMEOUT_MS=%ld; exiting anyway",
				  running, cfg->drain_timeout_ms);
			/* Now, while those threads still use cfg and curl. */
			_exit(0);
		}
	}
}

int
worker_main(const struct config *cfg, int listen_fd)
{
	struct acceptor *as;
	struct sigaction sa;
	sigset_t sigs;
	siginfo_t si;
	struct timespec tick = {1, 0};
	int n = (int)cfg->threads;
	int running;
	int rc;

	/*
	 * Every thread inherits this mask: SIGTERM/SIGINT reach only the
	 * main thread's sigtimedwait, the wake signal only a thread that
	 * unblocks it around accept().
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
	as = calloc((size_t)n, sizeof(*as));
	if (as == NULL) {
		log_warn("table of %d threads", n);
		return 1;
	}
	running = start_acceptors(as, n, cfg, listen_fd);
	if (running == 0) {
		free(as);
		return 1;
	}
	if (n > 1)
		log_info("Initialized with %d API keys. %d threads.",
			 cfg->nkeys, running);
	else
		log_info("Initialized with %d API keys.", cfg->nkeys);
	sigdelset(&sigs, WAKE_SIGNAL);
	while (running > 0) {
		if (sigtimedwait(&sigs, &si, &tick) >= 0)
			break;
		/* Threads end early only if accept() fails: exit then. */
		running = join_ended(as, n);
	}
	if (running == 0) {
		free(as);
		return 1;
	}
	drain(as, n, running, cfg);
	free(as);
	return 0;
}
