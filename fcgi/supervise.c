/*
 * supervise.c - the --processes supervisor: forks the worker processes,
 * replaces any that die, and on SIGTERM/SIGINT stops them all.
 */
#include "supervise.h"

#include "log.h"
#include "pool.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Set by SIGTERM/SIGINT; a lock-free atomic is safe in a handler. */
static atomic_int stop_requested;

/* Inherited by a new worker until worker_main installs its own. */
static void
on_stop_signal(int sig)
{
	(void)sig;
	atomic_store(&stop_requested, 1);
	pool_request_stop();
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

int
supervise(const struct config *cfg, int listen_fd, int n)
{
	struct pool pool;
	struct sigaction sa;
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
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) != 0 ||
	    sigaction(SIGINT, &sa, NULL) != 0) {
		log_warn("sigaction");
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
