/*
 * main.c - the FastCGI worker: options, listening socket, process pool,
 * accept loop. Everything that decides or talks to Redis and Cerebras is
 * in shared/.
 *
 * Ways to run it:
 *   spawned by a FastCGI process manager (spawn-fcgi, mod_fcgid, systemd
 *     with StandardInput=socket): the listening socket is fd 0;
 *   systemd socket activation (LISTEN_FDS): the socket is fd 3;
 *   cerebras-proxy --listen unix:/run/cerebras-proxy/fcgi.sock --processes 4
 *     binds the socket itself and keeps a pool of worker processes
 *     (--processes also works on an inherited socket);
 *   as a plain CGI program: one request from the environment and stdin,
 *     the answer on stdout, then exit.
 */
#include "config.h"
#include "log.h"
#include "proxy.h"
#include "tls.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcgiapp.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CP_VERSION     "0.1.0"
#define MAX_PROCESSES  1024
#define MAX_THREADS    1024 /* as WORKER_THREADS */
#define LISTEN_BACKLOG 1024
#define WAKE_SIGNAL    SIGUSR2
/* Thread stacks: only touched pages cost memory; OpenSSL needs some. */
#define THREAD_STACK (512 * 1024)

/* Set by SIGTERM/SIGINT; a lock-free atomic is safe in a handler. */
static atomic_int stop_requested;

static void
on_stop_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_requested, 1);
}

static void
usage(FILE *fp)
{
	static const char text[] =
		"usage: cerebras-proxy [--listen ADDR] [--processes N] "
		"[--threads N]\n"
		"                      [--check-config]\n"
		"\n"
		"A FastCGI proxy for the Cerebras chat-completions API.\n"
		"Configuration comes from the environment (see README.md).\n"
		"\n"
		"  --listen ADDR   bind ADDR (unix:/path/to.sock or "
		"host:port);\n"
		"                  default: the socket a process manager "
		"passed\n"
		"                  on fd 0 (or systemd's LISTEN_FDS), else "
		"CGI\n"
		"  --processes N   run N worker processes on that socket and\n"
		"                  keep them running (1..1024)\n"
		"  --threads N     serve N requests at once in each process\n"
		"                  (1..1024; default WORKER_THREADS, 1)\n"
		"  --check-config  print the effective configuration, secrets\n"
		"                  masked, and exit\n"
		"  --help          this text\n"
		"  --version       the version and libcurl's\n";

	fputs(text, fp);
}

/* Binds ADDR; returns the listening fd or -1 with a message logged. */
static int
open_listener(const char *addr)
{
	int fd = -1;
	int one = 1;

	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un sun;
		const char *path = addr + 5;
		struct stat st;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (strlen(path) >= sizeof(sun.sun_path) || path[0] != '/') {
			log_warnx("--listen: unix socket path must be absolute "
				  "and shorter than %zu bytes",
				  sizeof(sun.sun_path));
			return -1;
		}
		memcpy(sun.sun_path, path, strlen(path) + 1);
		/* A stale socket from an earlier run; never a regular file. */
		if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    unlink(path) != 0) {
			log_warn("--listen: cannot remove stale %s", path);
			return -1;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			log_warn("socket");
			return -1;
		}
		if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
			log_warn("--listen: bind %s", path);
			goto fail;
		}
	} else {
		struct addrinfo hints;
		struct addrinfo *res = NULL;
		char host[256];
		const char *colon = strrchr(addr, ':');
		size_t hlen;
		int rc;

		if (colon == NULL || colon == addr || colon[1] == '\0') {
			log_warnx("--listen: expected unix:/path or host:port, "
				  "got \"%s\"",
				  addr);
			return -1;
		}
		hlen = (size_t)(colon - addr);
		if (addr[0] == '[' && colon[-1] == ']') {
			addr++;
			hlen -= 2;
		}
		if (hlen >= sizeof(host)) {
			log_warnx("--listen: host name too long");
			return -1;
		}
		memcpy(host, addr, hlen);
		host[hlen] = '\0';
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
		rc = getaddrinfo(host, colon + 1, &hints, &res);
		if (rc != 0) {
			log_warnx("--listen: %s: %s", addr, gai_strerror(rc));
			return -1;
		}
		fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			log_warn("socket");
			freeaddrinfo(res);
			return -1;
		}
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one,
			       sizeof(one)) != 0)
			log_warn("setsockopt SO_REUSEADDR");
		if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
			log_warn("--listen: bind %s", addr);
			freeaddrinfo(res);
			goto fail;
		}
		freeaddrinfo(res);
	}
	if (listen(fd, LISTEN_BACKLOG) != 0) {
		log_warn("listen");
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
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
 * The listening socket systemd passed (sd_listen_fds(3): the first one,
 * fd 3), or -1 when there is none for this process.
 */
static int
systemd_fd(const struct config *cfg)
{
	if (cfg->listen_fds < 1 || cfg->listen_pid != (long)getpid())
		return -1;
	return 3; /* SD_LISTEN_FDS_START; we use the first socket only */
}

/* FastCGI: libfcgi's streams. ctx is the FCGX_Request. */
static const char *
fcgi_param(void *ctx, const char *name)
{
	FCGX_Request *req = ctx;

	return FCGX_GetParam(name, req->envp);
}

static int
fcgi_read(void *ctx, char *buf, int len)
{
	FCGX_Request *req = ctx;
	int n = FCGX_GetStr(buf, len, req->in);

	if (n == 0 && FCGX_GetError(req->in) != 0)
		return -1;
	return n;
}

static int
fcgi_write(void *ctx, const char *buf, int len, int flush)
{
	FCGX_Request *req = ctx;

	if (FCGX_PutStr(buf, len, req->out) != len)
		return -1;
	/*
	 * FCGX_FFlush sends one FCGI_STDOUT record now. After a failure the
	 * stream is marked closed and later flushes "succeed": check the
	 * stream's error too.
	 */
	if (flush &&
	    (FCGX_FFlush(req->out) != 0 || FCGX_GetError(req->out) != 0))
		return -1;
	return 0;
}

static int
fcgi_finish(void *ctx)
{
	FCGX_Request *req = ctx;

	if (FCGX_FFlush(req->out) != 0 || FCGX_GetError(req->out) != 0)
		return -1;
	return 0;
}

/*
 * Whether the web server closed the connection (the client left: nginx
 * closes the FastCGI connection then). poll, no wait.
 */
static int
fcgi_gone(void *ctx)
{
	FCGX_Request *req = ctx;
	struct pollfd p;
	char c;
	ssize_t n;

	p.fd = req->ipcFd;
	p.events = POLLIN | POLLRDHUP;
	p.revents = 0;
	if (p.fd < 0 || poll(&p, 1, 0) <= 0)
		return 0;
	if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
		return 1;
	/*
	 * The web server sends nothing after the request body, so data
	 * here can only be the end of the connection; peek to be sure.
	 */
	n = recv(p.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			  errno != EINTR);
}

/*
 * Watches the connection for a hang-up until until_ns. Anything else
 * that makes it readable ends the watch early (returns 0): a busy fd is
 * not polled in a loop.
 */
static int
fcgi_wait_gone(void *ctx, int64_t until_ns)
{
	FCGX_Request *req = ctx;
	struct timespec ts;
	struct pollfd p;
	int64_t left;
	int rc;

	while ((left = until_ns - mono_ns()) > 0) {
		ts.tv_sec = (time_t)(left / 1000000000);
		ts.tv_nsec = (long)(left % 1000000000);
		p.fd = req->ipcFd;
		p.events = POLLRDHUP;
		p.revents = 0;
		rc = ppoll(&p, 1, &ts, NULL);
		if (rc < 0 && errno != EINTR)
			return 0;
		if (rc > 0)
			return fcgi_gone(ctx);
	}
	return 0;
}

/* Plain CGI: the environment, stdin and stdout (unbuffered). */
static int
cgi_read(void *ctx, char *buf, int len)
{
	ssize_t n;

	(void)ctx;
	do
		n = read(STDIN_FILENO, buf, (size_t)len);
	while (n < 0 && errno == EINTR);
	return (int)n;
}

static int
cgi_write(void *ctx, const char *buf, int len, int flush)
{
	ssize_t n;

	(void)ctx;
	(void)flush; /* write(2) leaves nothing behind to flush */
	while (len > 0) {
		n = write(STDOUT_FILENO, buf, (size_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (int)n;
	}
	return 0;
}

static int
cgi_finish(void *ctx)
{
	(void)ctx; /* cgi_write leaves nothing behind */
	return 0;
}

/* A CGI program cannot watch its client: the web server holds it. */
static int
cgi_gone(void *ctx)
{
	(void)ctx;
	return 0;
}

static int
cgi_wait_gone(void *ctx, int64_t until_ns)
{
	(void)ctx;
	(void)until_ns;
	return 0;
}

/*
 * Serves the one request of a CGI invocation. Each invocation is a new
 * process: a new TLS connection upstream and a new Redis connection.
 */
static int
cgi_main(const struct config *cfg)
{
	struct worker w;
	struct request_io io;
	char errbuf[256];

	if (worker_init(&w, cfg, errbuf, sizeof(errbuf)) != CP_OK) {
		log_warnx("worker setup failed: %s", errbuf);
		return 1;
	}
	memset(&io, 0, sizeof(io));
	io.io_param = config_cgi_param;
	io.io_read = cgi_read;
	io.io_write = cgi_write;
	io.io_finish = cgi_finish;
	io.io_gone = cgi_gone;
	io.io_wait_gone = cgi_wait_gone;
	proxy_handle(&w, &io);
	worker_free(&w);
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

static void
on_wake_signal(int sig)
{
	(void)sig; /* only there to interrupt accept() */
}

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
	io.io_param = fcgi_param;
	io.io_read = fcgi_read;
	io.io_write = fcgi_write;
	io.io_finish = fcgi_finish;
	io.io_gone = fcgi_gone;
	io.io_wait_gone = fcgi_wait_gone;
	io.io_ctx = &req;
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
 * Serves requests on listen_fd with cfg->threads accepting threads until
 * told to stop (SIGTERM/SIGINT, handled here in the main thread with
 * sigtimedwait). Then no thread accepts any more, and running requests get
 * up to DRAIN_TIMEOUT_MS to finish before the process exits anyway.
 * Returns an exit code.
 */
static int
worker_main(const struct config *cfg, int listen_fd)
{
	struct acceptor *as;
	pthread_attr_t attr;
	struct sigaction sa;
	sigset_t sigs;
	siginfo_t si;
	struct timespec tick = {1, 0};
	struct timespec drain_tick = {0, 20 * 1000000L};
	int64_t deadline;
	int n = (int)cfg->threads;
	int running = 0;
	int i;

	/*
	 * Every thread inherits this mask: SIGTERM/SIGINT reach only the
	 * main thread's sigtimedwait, the wake signal only a thread that
	 * unblocks it around accept().
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, WAKE_SIGNAL);
	if (pthread_sigmask(SIG_BLOCK, &sigs, NULL) != 0) {
		log_warnx("pthread_sigmask failed");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_wake_signal;
	sigemptyset(&sa.sa_mask);
	/* Our own SIGTERM disposition first, so FCGX_Init keeps it. */
	if (sigaction(WAKE_SIGNAL, &sa, NULL) != 0 ||
	    install_stop_handler() != 0) {
		log_warn("sigaction");
		return 1;
	}
	if (FCGX_Init() != 0) {
		log_warnx("FCGX_Init failed");
		return 1;
	}
	as = calloc((size_t)n, sizeof(*as));
	if (as == NULL || pthread_attr_init(&attr) != 0) {
		log_warnx("out of memory");
		free(as);
		return 1;
	}
	if (pthread_attr_setstacksize(&attr, THREAD_STACK) != 0)
		log_warnx("pthread_attr_setstacksize failed; default stacks");
	for (i = 0; i < n; i++) {
		as[i].a_cfg = cfg;
		as[i].a_listen_fd = listen_fd;
		if (pthread_create(&as[i].a_tid, &attr, acceptor_main,
				   &as[i]) != 0) {
			log_warnx("could not start thread %d of %d", i + 1, n);
			break;
		}
		as[i].a_running = 1;
		running++;
	}
	(void)pthread_attr_destroy(&attr);
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
	free(as);
	return 0;
}

struct pool {
	pid_t *p_pids;
	int p_n;
};

static pid_t
spawn_worker(const struct config *cfg, int listen_fd)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(worker_main(cfg, listen_fd));
	if (pid < 0)
		log_warn("fork");
	return pid;
}

/*
 * Keeps n workers running on listen_fd; replaces any that die. On
 * SIGTERM/SIGINT stops them (SIGTERM, then SIGKILL once DRAIN_TIMEOUT_MS
 * and a second more have passed) and returns.
 */
static int
supervise(const struct config *cfg, int listen_fd, int n)
{
	struct pool pool;
	pid_t pid;
	int status;
	int i;
	int alive;
	time_t last_spawn_fail = 0;
	struct timespec ts;
	int64_t deadline;

	pool.p_n = n;
	pool.p_pids = calloc((size_t)n, sizeof(pid_t));
	if (pool.p_pids == NULL) {
		log_warnx("out of memory");
		return 1;
	}
	if (install_stop_handler() != 0) {
		free(pool.p_pids);
		return 1;
	}
	for (i = 0; i < n; i++)
		pool.p_pids[i] = spawn_worker(cfg, listen_fd);
	while (!atomic_load(&stop_requested)) {
		pid = waitpid(-1, &status, 0);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD) {
				/* All spawns failed; try again shortly. */
				ts.tv_sec = 1;
				ts.tv_nsec = 0;
				nanosleep(&ts, NULL);
			}
		}
		for (i = 0; i < n && !atomic_load(&stop_requested); i++) {
			if (pool.p_pids[i] > 0 && pool.p_pids[i] != pid)
				continue;
			if (pool.p_pids[i] == pid && pid > 0) {
				if (WIFSIGNALED(status))
					log_warnx("worker %ld killed by signal "
						  "%d; "
						  "restarting",
						  (long)pid, WTERMSIG(status));
				else
					log_warnx("worker %ld exited with %d; "
						  "restarting",
						  (long)pid,
						  WEXITSTATUS(status));
				/* Do not spin if workers die at once. */
				if (time(NULL) - last_spawn_fail < 1) {
					ts.tv_sec = 1;
					ts.tv_nsec = 0;
					nanosleep(&ts, NULL);
				}
				last_spawn_fail = time(NULL);
			}
			pool.p_pids[i] = spawn_worker(cfg, listen_fd);
		}
	}
	for (i = 0; i < n; i++)
		if (pool.p_pids[i] > 0 && kill(pool.p_pids[i], SIGTERM) != 0)
			log_warn("kill %ld", (long)pool.p_pids[i]);
	/* The workers drain for DRAIN_TIMEOUT_MS; then force. */
	deadline = mono_ns() + (cfg->drain_timeout_ms + 1000) * 1000000LL;
	for (alive = n; alive > 0 && mono_ns() < deadline;) {
		alive = 0;
		for (int j = 0; j < n; j++) {
			if (pool.p_pids[j] <= 0)
				continue;
			pid = waitpid(pool.p_pids[j], &status, WNOHANG);
			if (pid == pool.p_pids[j] ||
			    (pid < 0 && errno == ECHILD))
				pool.p_pids[j] = 0;
			else
				alive++;
		}
		if (alive > 0) {
			ts.tv_sec = 0;
			ts.tv_nsec = 10 * 1000000;
			nanosleep(&ts, NULL);
		}
	}
	for (i = 0; i < n; i++) {
		if (pool.p_pids[i] > 0) {
			(void)kill(pool.p_pids[i], SIGKILL);
			(void)waitpid(pool.p_pids[i], &status, 0);
		}
	}
	free(pool.p_pids);
	return 0;
}

/* A count option's value, 1..max; -1 after a one-line message. */
static int
count_option(const char *name, const char *val, int max, long long *out)
{
	const char *why;

	if (parse_ll(val, 1, max, out, &why) == 0)
		return 0;
	fprintf(stderr, "cerebras-proxy: %s: %s (expected 1..%d)\n", name, why,
		max);
	return -1;
}

int
main(int argc, char **argv)
{
	struct config cfg;
	char err[512];
	const char *listen_addr = NULL;
	long long nproc = 1;
	long long nthreads = 0;
	int nproc_given = 0;
	int check_only = 0;
	int listen_fd = 0;
	int rc;
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("cerebras-proxy %s (%s)\n", CP_VERSION,
			       curl_version());
			return 0;
		} else if (strcmp(argv[i], "--check-config") == 0) {
			check_only = 1;
		} else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
			listen_addr = argv[++i];
		} else if (strcmp(argv[i], "--processes") == 0 &&
			   i + 1 < argc) {
			nproc_given = 1;
			if (count_option(argv[i], argv[i + 1], MAX_PROCESSES,
					 &nproc) != 0)
				return 2;
			i++;
		} else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			if (count_option(argv[i], argv[i + 1], MAX_THREADS,
					 &nthreads) != 0)
				return 2;
			i++;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (config_load_env(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "cerebras-proxy: %s\n", err);
		return 1;
	}
	if (nthreads > 0)
		cfg.threads = (long)nthreads; /* the option wins */
	if (check_only) {
		config_print(&cfg, stdout);
		sched_local_name(&cfg, err, sizeof(err));
		printf("# per-host scheduler state: /dev/shm%s\n", err);
		config_free(&cfg);
		return 0;
	}
	/* A dead client must never kill a worker (libfcgi also sees to it). */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		log_warn("signal SIGPIPE");
		config_free(&cfg);
		return 1;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_warnx("curl_global_init failed");
		config_free(&cfg);
		return 1;
	}
	/* Once, before any fork or thread: every connection shares it. */
	if (tls_store_init(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "cerebras-proxy: %s\n", err);
		curl_global_cleanup();
		config_free(&cfg);
		return 1;
	}
	if (listen_addr != NULL) {
		listen_fd = open_listener(listen_addr);
		if (listen_fd < 0) {
			config_free(&cfg);
			return 1;
		}
		rc = supervise(&cfg, listen_fd, (int)nproc);
		close(listen_fd);
		if (strncmp(listen_addr, "unix:", 5) == 0)
			(void)unlink(listen_addr + 5);
	} else if ((listen_fd = systemd_fd(&cfg)) >= 0 || !FCGX_IsCGI()) {
		if (listen_fd < 0)
			listen_fd = 0; /* FCGI_LISTENSOCK_FILENO */
		if (nproc_given)
			rc = supervise(&cfg, listen_fd, (int)nproc);
		else
			rc = worker_main(&cfg, listen_fd);
	} else if (config_cgi_param(NULL, "REQUEST_METHOD") != NULL) {
		rc = cgi_main(&cfg);
	} else {
		fprintf(stderr,
			"cerebras-proxy: no FastCGI socket on fd 0 and no CGI "
			"request in the environment; use --listen ADDR\n");
		rc = 2;
	}
	tls_store_free();
	curl_global_cleanup();
	config_free(&cfg);
	return rc;
}
