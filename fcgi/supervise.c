/*
 * supervise.c - the --processes supervisor: forks the worker processes,
 * replaces any that die, and on SIGTERM/SIGINT stops them all.
 *
 * SIGTERM, SIGINT and SIGCHLD stay blocked in the supervisor and are taken
 * only by its one wait (sigtimedwait). A signal that comes while it is busy
 * reaping, forking or logging stays pending until that wait, which then
 * returns at once: there is no moment between looking for a stop request
 * and going to sleep in which a SIGTERM could be noticed too late. (The
 * supervisor used to check a flag its handler set and then block in
 * waitpid(); a SIGTERM between the two waited there until some worker
 * died, and idle workers do not die.)
 */
#include "supervise.h"

#include "log.h"
#include "pool.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_SEC 1000000000LL
/* Do not spin if workers die at once: one replacement a second at most. */
#define RESPAWN_GAP_NS NS_PER_SEC

/* One worker process. */
struct sup_slot {
	pid_t ss_pid;	   /* the worker, or 0 while there is none */
	int64_t ss_due_ns; /* with ss_pid 0: when to start one (mono_ns) */
};

struct sup {
	const struct config *s_cfg; /* borrowed */
	int s_listen_fd;
	struct sup_slot *s_slots; /* owned: s_n of them */
	int s_n;
	sigset_t s_waited;	   /* SIGTERM, SIGINT, SIGCHLD, SIGHUP */
	sigset_t s_child_mask;	   /* the signal mask a worker starts with */
	int64_t s_last_respawn_ns; /* when the latest replacement was due */
};

/*
 * Never runs (SIGCHLD stays blocked). With the default disposition a
 * blocked SIGCHLD may be discarded instead of left pending (POSIX leaves
 * it open), and the wait would not see it.
 */
static void
on_sigchld(int sig)
{
	(void)sig;
}

/* Starts slot i's worker; if fork fails, tries again a second later. */
static void
sup_spawn(struct sup *s, int i)
{
	struct sup_slot *slot = &s->s_slots[i];
	pid_t pid = fork();

	if (pid == 0) {
		/*
		 * SIGTERM and SIGINT stay blocked in the new worker: one that
		 * comes before worker_main waits for it is kept pending for
		 * it, not lost nor fatal.
		 */
		(void)signal(SIGCHLD, SIG_DFL);
		(void)pthread_sigmask(SIG_SETMASK, &s->s_child_mask, NULL);
		_exit(worker_main(s->s_cfg, s->s_listen_fd));
	}
	if (pid < 0) {
		log_warn("fork");
		slot->ss_pid = 0;
		slot->ss_due_ns = mono_ns() + RESPAWN_GAP_NS;
		return;
	}
	slot->ss_pid = pid;
}

/*
 * Collects every worker that has ended and sets when its replacement
 * starts: now; or, so as not to spin when workers die at once, a second
 * from now if the latest replacement was due less than a second ago (a
 * second after that one if it is still to come).
 */
static void
sup_reap(struct sup *s)
{
	struct sup_slot *slot;
	int64_t now;
	int64_t due;
	int status;
	pid_t pid;
	int i;

	for (;;) {
		pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			return;
		slot = NULL;
		for (i = 0; i < s->s_n; i++)
			if (s->s_slots[i].ss_pid == pid)
				slot = &s->s_slots[i];
		if (slot == NULL)
			continue; /* not a worker: nothing to replace */
		if (WIFSIGNALED(status))
			log_warnx("worker %ld killed by signal %d; restarting",
				  (long)pid, WTERMSIG(status));
		else
			log_warnx("worker %ld exited with %d; restarting",
				  (long)pid, WEXITSTATUS(status));
		now = mono_ns();
		due = now;
		if (now - s->s_last_respawn_ns < RESPAWN_GAP_NS) {
			if (due < s->s_last_respawn_ns)
				due = s->s_last_respawn_ns;
			due += RESPAWN_GAP_NS;
		}
		s->s_last_respawn_ns = due;
		slot->ss_pid = 0;
		slot->ss_due_ns = due;
	}
}

/*
 * Starts the workers that are due; returns the nanoseconds until the next
 * one is, or -1 if none is waiting.
 */
static int64_t
sup_respawn(struct sup *s)
{
	struct sup_slot *slot;
	int64_t next = -1;
	int64_t left;
	int i;

	for (i = 0; i < s->s_n; i++) {
		slot = &s->s_slots[i];
		if (slot->ss_pid > 0)
			continue;
		if (slot->ss_due_ns <= mono_ns())
			sup_spawn(s, i);
		if (slot->ss_pid > 0)
			continue;
		left = slot->ss_due_ns - mono_ns();
		if (left < 0)
			left = 0;
		if (next < 0 || left < next)
			next = left;
	}
	return next;
}

/*
 * Waits up to wait_ns (< 0: for as long as it takes) for one of set;
 * returns the signal, or 0 if none came.
 */
static int
sup_wait(const sigset_t *set, int64_t wait_ns)
{
	struct timespec ts;
	int sig;

	if (wait_ns < 0) {
		sig = sigwaitinfo(set, NULL);
	} else {
		ts.tv_sec = (time_t)(wait_ns / NS_PER_SEC);
		ts.tv_nsec = (long)(wait_ns % NS_PER_SEC);
		sig = sigtimedwait(set, NULL, &ts);
	}
	if (sig < 0) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("sigtimedwait");
		return 0;
	}
	return sig;
}

/*
 * SIGTERM to every worker; they drain for DRAIN_TIMEOUT_MS. Whatever is
 * left a second after that gets SIGKILL. Returns once all are reaped.
 */
static void
sup_stop(struct sup *s)
{
	sigset_t chld;
	int64_t deadline;
	int64_t left;
	pid_t pid;
	pid_t rc;
	int status;
	int alive;
	int i;

	for (i = 0; i < s->s_n; i++) {
		pid = s->s_slots[i].ss_pid;
		if (pid > 0 && kill(pid, SIGTERM) != 0)
			log_warn("kill %ld", (long)pid);
	}
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	deadline = mono_ns() + (s->s_cfg->drain_timeout_ms + 1000) * 1000000LL;
	for (;;) {
		alive = 0;
		for (i = 0; i < s->s_n; i++) {
			pid = s->s_slots[i].ss_pid;
			if (pid <= 0)
				continue;
			rc = waitpid(pid, &status, WNOHANG);
			if (rc == pid || (rc < 0 && errno == ECHILD))
				s->s_slots[i].ss_pid = 0;
			else
				alive++;
		}
		left = deadline - mono_ns();
		if (alive == 0 || left <= 0)
			break;
		(void)sup_wait(&chld, left);
	}
	for (i = 0; i < s->s_n; i++) {
		pid = s->s_slots[i].ss_pid;
		if (pid <= 0)
			continue;
		(void)kill(pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			continue;
		s->s_slots[i].ss_pid = 0;
	}
}

/* Sends sig to every running worker (SIGHUP: reread the tokens file). */
static void
sup_forward(struct sup *s, int sig)
{
	int i;

	for (i = 0; i < s->s_n; i++)
		if (s->s_slots[i].ss_pid > 0 &&
		    kill(s->s_slots[i].ss_pid, sig) != 0)
			log_warn("kill %ld", (long)s->s_slots[i].ss_pid);
}

int
supervise(const struct config *cfg, int listen_fd, int n)
{
	struct sup s;
	struct sigaction sa;
	int sig;
	int rc;
	int i;

	memset(&s, 0, sizeof(s));
	s.s_cfg = cfg;
	s.s_listen_fd = listen_fd;
	s.s_n = n;
	s.s_slots = calloc((size_t)n, sizeof(*s.s_slots));
	if (s.s_slots == NULL) {
		log_warn("table of %d workers", n);
		return 1;
	}
	sigemptyset(&s.s_waited);
	sigaddset(&s.s_waited, SIGTERM);
	sigaddset(&s.s_waited, SIGINT);
	sigaddset(&s.s_waited, SIGCHLD);
	sigaddset(&s.s_waited, SIGHUP);
	rc = pthread_sigmask(SIG_BLOCK, &s.s_waited, &s.s_child_mask);
	if (rc != 0) {
		log_warnx("pthread_sigmask: %s", strerror(rc));
		free(s.s_slots);
		return 1;
	}
	sigaddset(&s.s_child_mask, SIGTERM);
	sigaddset(&s.s_child_mask, SIGINT);
	/* Workers take SIGHUP with main's handler: blocked here only. */
	sigdelset(&s.s_child_mask, SIGHUP);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigchld;
	sa.sa_flags = SA_NOCLDSTOP; /* stopped workers are not news */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL) != 0) {
		log_warn("sigaction SIGCHLD");
		free(s.s_slots);
		return 1;
	}
	s.s_last_respawn_ns = mono_ns() - RESPAWN_GAP_NS;
	for (i = 0; i < n; i++)
		sup_spawn(&s, i);
	for (;;) {
		sup_reap(&s);
		sig = sup_wait(&s.s_waited, sup_respawn(&s));
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP)
			sup_forward(&s, SIGHUP);
	}
	sup_stop(&s);
	free(s.s_slots);
	/*
	 * The signals stay blocked: a second SIGTERM must not kill the
	 * process before main has removed the socket file.
	 */
	return 0;
}
