/*
 * main.c - the FastCGI worker's entry point: options, configuration, and
 * which way it runs. Everything that decides or talks to Redis and
 * Cerebras is in shared/; the rest of the front end is listen.c (the
 * listening socket), io.c (FastCGI and CGI requests), pool.c (one worker
 * process and its threads) and supervise.c (--processes).
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
#include "clients.h"
#include "config.h"
#include "io.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "models.h"
#include "pool.h"
#include "sched_local.h"
#include "status.h"
#include "supervise.h"
#include "tls.h"
#include "util.h"

#include <curl/curl.h>
#include <fcgiapp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define CP_VERSION    "0.1.0"
#define MAX_PROCESSES 1024
#define MAX_THREADS   4096 /* as WORKER_THREADS, WORKER_MAX_THREADS */
/*
 * Descriptors per request a process may hold: its FastCGI connection, the
 * thread's Redis and TLS connections, a spare for a reconnect or libcurl's
 * resolver, and one more for a request queued for a thread.
 */
#define FDS_PER_REQUEST 5
#define FDS_RESERVED	32 /* stdio, the listening socket, the acceptor */
#define NOFILE_WANTED	65536

static void
usage(FILE *fp)
{
	static const char text[] =
		"usage: cerebras-proxy [--listen ADDR] [--processes N] "
		"[--threads N]\n"
		"                      [--max-threads N] [--check-config]\n"
		"       cerebras-proxy status [--json]\n"
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
		"  --threads N     keep at least N worker threads in each\n"
		"                  process (1..4096; default WORKER_THREADS, "
		"2)\n"
		"  --max-threads N let a process grow to N threads, one per\n"
		"                  request in flight (1..4096; default\n"
		"                  WORKER_MAX_THREADS, 512)\n"
		"  --check-config  print the effective configuration, secrets\n"
		"                  masked, and exit\n"
		"  --help          this text\n"
		"  status          print the scheduler's shared state (keys,\n"
		"                  budgets, Redis, fallback) and exit; --json\n"
		"                  for one JSON object\n"
		"  --version       the version and libcurl's\n";

	fputs(text, fp);
}

/* A count option's value, 1..max; CP_ERR_INVAL after a one-line message. */
static enum cp_err
count_option(const char *name, const char *val, int max, long long *out)
{
	const char *why;
	enum cp_err err;

	err = parse_ll(val, 1, max, out, &why);
	if (err != CP_OK)
		fprintf(stderr, "cerebras-proxy: %s: %s (expected 1..%d)\n",
			name, why, max);
	return err;
}

/*
 * Raises the soft open-file limit towards the hard one, and lowers
 * WORKER_MAX_THREADS (and WORKER_THREADS) to what the limit holds, so a
 * process never runs out of descriptors for the requests it takes.
 */
static void
size_for_descriptors(struct config *cfg)
{
	struct rlimit rl, want;
	long cap;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		log_warn("getrlimit RLIMIT_NOFILE");
		return;
	}
	want = rl;
	want.rlim_cur = rl.rlim_max;
	if (want.rlim_cur == RLIM_INFINITY || want.rlim_cur > NOFILE_WANTED)
		want.rlim_cur = NOFILE_WANTED;
	/* May fail (systemd's @resources filter): LimitNOFILE= did it. */
	if (want.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &want) == 0)
		rl = want;
	if (rl.rlim_cur == RLIM_INFINITY)
		return;
	cap = ((long)rl.rlim_cur - FDS_RESERVED) / FDS_PER_REQUEST;
	if (cap < 1)
		cap = 1;
	if (cfg->max_threads <= cap)
		return;
	log_warnx("WORKER_MAX_THREADS=%ld lowered to %ld: the open-file limit "
		  "is %llu (%d per request); raise it (LimitNOFILE=, ulimit "
		  "-n)",
		  cfg->max_threads, cap, (unsigned long long)rl.rlim_cur,
		  FDS_PER_REQUEST);
	cfg->max_threads = cap;
	if (cfg->threads > cap)
		cfg->threads = cap;
}

/*
 * Serves on the socket --listen binds, with a pool of processes, and
 * removes the socket file afterwards. Returns an exit code.
 */
static int
run_listen(const struct config *cfg, const char *addr, int nproc)
{
	int listen_fd;
	int rc;

	listen_fd = open_listener(addr);
	if (listen_fd < 0)
		return 1;
	rc = supervise(cfg, listen_fd, nproc);
	close(listen_fd);
	if (strncmp(addr, "unix:", 5) == 0)
		(void)unlink(addr + 5);
	return rc;
}

/* SIGHUP: read the tokens file again (clients.c), before the next request. */
static void
on_sighup(int sig)
{
	(void)sig;
	clients_request_reload();
}

static int
install_sighup(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sighup;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGHUP, &sa, NULL) != 0) {
		log_warn("sigaction SIGHUP");
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct config cfg;
	CURLcode cc;
	char err[512];
	const char *listen_addr = NULL;
	long long nproc = 1;
	long long nthreads = 0;
	long long nmax = 0;
	int nproc_given = 0;
	int check_only = 0;
	int listen_fd = 0;
	int rc;
	int i;

	if (argc > 1 && strcmp(argv[1], "status") == 0)
		return status_main(argc - 1, argv + 1);
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
					 &nproc) != CP_OK)
				return 2;
			i++;
		} else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			if (count_option(argv[i], argv[i + 1], MAX_THREADS,
					 &nthreads) != CP_OK)
				return 2;
			i++;
		} else if (strcmp(argv[i], "--max-threads") == 0 &&
			   i + 1 < argc) {
			if (count_option(argv[i], argv[i + 1], MAX_THREADS,
					 &nmax) != CP_OK)
				return 2;
			i++;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (config_load_env(&cfg, err, sizeof(err)) != CP_OK) {
		fprintf(stderr, "cerebras-proxy: %s\n", err);
		return 1;
	}
	log_set_format(cfg.log_json); /* before any line, thread or fork */
	/* The options win; the minimum wins over the maximum. */
	if (nthreads > 0)
		cfg.threads = (long)nthreads;
	if (nmax > 0)
		cfg.max_threads = (long)nmax;
	if (nthreads > 1 || nmax > 1)
		cfg.threads_given = 1;
	if (cfg.max_threads < cfg.threads)
		cfg.max_threads = cfg.threads;
	if (clients_init(&cfg, err, sizeof(err)) != CP_OK) {
		fprintf(stderr, "cerebras-proxy: %s\n", err);
		config_free(&cfg);
		return 1;
	}
	if (check_only) {
		config_print(&cfg, stdout);
		if (clients_required())
			printf("# clients: %d (tokens required)\n",
			       clients_count());
		else
			printf("# clients: none configured: the proxy is OPEN "
			       "(anyone who reaches it spends the API "
			       "keys)\n");
		clients_free();
		sched_local_name(&cfg, err, sizeof(err));
		printf("# per-host scheduler state: /dev/shm%s\n", err);
		metrics_name(&cfg, err, sizeof(err));
		printf("# per-host metrics: /dev/shm%s\n", err);
		models_cache_name(&cfg, err, sizeof(err));
		printf("# per-host models cache: /dev/shm%s\n", err);
		config_free(&cfg);
		return 0;
	}
	size_for_descriptors(&cfg);
	if (install_sighup() != 0) {
		clients_free();
		config_free(&cfg);
		return 1;
	}
	/* A dead client must never kill a worker (libfcgi also sees to it). */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
		log_warn("signal SIGPIPE");
		config_free(&cfg);
		return 1;
	}
	cc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (cc != CURLE_OK) {
		log_warnx("curl_global_init: %s", curl_easy_strerror(cc));
		config_free(&cfg);
		return 1;
	}
	/* Once, before any fork or thread: every connection shares it. */
	if (tls_store_init(&cfg, err, sizeof(err)) != CP_OK) {
		fprintf(stderr, "cerebras-proxy: %s\n", err);
		curl_global_cleanup();
		config_free(&cfg);
		return 1;
	}
	if (!clients_required() &&
	    config_cgi_param(NULL, "REQUEST_METHOD") == NULL)
		log_warnx("no PROXY_TOKENS or PROXY_TOKENS_FILE: the proxy is "
			  "OPEN, anyone who can reach it spends the API keys "
			  "(fine on a private network only; see README, "
			  "\"Client access\")");
	if (listen_addr != NULL) {
		rc = run_listen(&cfg, listen_addr, (int)nproc);
	} else if ((listen_fd = systemd_fd(&cfg)) >= 0 || !FCGX_IsCGI()) {
		if (listen_fd < 0)
			listen_fd = 0; /* FCGI_LISTENSOCK_FILENO */
		if (listen_from_mod_fcgid(listen_fd)) {
			/* One request per process: a pool would idle. */
			if (cfg.threads_given)
				log_warnx("started by Apache mod_fcgid, which "
					  "sends a process one request at a "
					  "time: serving with 1 thread, not "
					  "WORKER_THREADS=%ld/WORKER_MAX_"
					  "THREADS=%ld (size "
					  "FcgidMaxProcessesPerClass instead)",
					  cfg.threads, cfg.max_threads);
			cfg.threads = cfg.max_threads = 1;
		}
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
	clients_free();
	config_free(&cfg);
	return rc;
}
