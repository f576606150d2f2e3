"""The --processes supervisor's life cycle (fcgi/supervise.c): its workers
start, a dead one is replaced (at most one replacement a second when they
keep dying), and a SIGTERM, whenever it comes, stops the supervisor and
every worker, forcing a worker that does not drain with SIGKILL once
DRAIN_TIMEOUT_MS and a second have passed.

A SIGTERM must never be lost. The supervisor used to check a flag set by
its signal handler and then block in waitpid(): a SIGTERM between the two
only set the flag, and waitpid() then waited for a worker to die, which
idle workers never do. That window is a few instructions wide, so the plain
rounds here rarely land in it; the widened-window test preloads a shim
(compiled here) that sleeps before every call in which the supervisor
blocks waiting for a child or a signal, and sends the SIGTERM during that
sleep. A supervisor that waits for its signals with the signals blocked is
indifferent to the sleep.

No web server and no upstream: the workers are started with GET-only
configuration (one key, REDIS_URL=none, an upstream that refuses at once),
and only processes are observed: their log lines and /proc. Every process
is started here, tracked by PID and stopped by PID.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "deploy"))

import stack  # noqa: E402

BINARY = os.path.abspath(os.environ.get("CEREBRAS_PROXY_BIN",
                                        os.path.join(ROOT, "build", "cerebras-proxy")))
READY_LINE = "Initialized with 1 API keys."
# Idle workers drain at once: a supervisor and its workers are gone well
# within this after a SIGTERM (measured: 10-40 ms). A lost SIGTERM shows as
# a supervisor still running after it.
EXIT_BOUND = 3.0
DRAIN_TIMEOUT_MS = 100
# How long the shim holds the supervisor before each blocking wait.
SHIM_DELAY_MS = 150
# Supervisors started by each test: enough moments, a bounded run time.
VARIED_ROUNDS = 2
WIDENED_ROUNDS = 3

# LD_PRELOAD shim: in the process that loaded it first (the supervisor, not
# its forked workers), sleep SHIM_DELAY_MS before each call that blocks
# until a child or a signal comes. A signal during the sleep ends the sleep
# (its handler runs), and the call then blocks as it would have.
SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t shim_pid;
static long shim_ms;

__attribute__((constructor)) static void
shim_init(void)
{
	const char *v = getenv("SHIM_DELAY_MS");

	shim_pid = getpid();
	shim_ms = v != NULL ? atol(v) : 0;
}

static void
shim_pause(void)
{
	struct timespec ts;

	if (getpid() != shim_pid || shim_ms <= 0)
		return;
	ts.tv_sec = shim_ms / 1000;
	ts.tv_nsec = (shim_ms % 1000) * 1000000L;
	(void)nanosleep(&ts, NULL);
}

pid_t
waitpid(pid_t pid, int *status, int options)
{
	pid_t (*real)(pid_t, int *, int) =
		(pid_t (*)(pid_t, int *, int))dlsym(RTLD_NEXT, "waitpid");

	if (!(options & WNOHANG))
		shim_pause();
	return real(pid, status, options);
}

int
sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *ts)
{
	int (*real)(const sigset_t *, siginfo_t *, const struct timespec *) =
		(int (*)(const sigset_t *, siginfo_t *,
			 const struct timespec *))dlsym(RTLD_NEXT, "sigtimedwait");

	shim_pause();
	return real(set, info, ts);
}

int
sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
	int (*real)(const sigset_t *, siginfo_t *) =
		(int (*)(const sigset_t *, siginfo_t *))dlsym(RTLD_NEXT,
							      "sigwaitinfo");

	shim_pause();
	return real(set, info);
}
"""


def setUpModule():
    if not os.access(BINARY, os.X_OK):
        raise RuntimeError("no binary at %s: run make first" % BINARY)


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        # Gone: the open gives ENOENT, a read after the reap ESRCH.
        return ""


def live_children(pid):
    """PIDs of the live (not zombie) child processes of pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = read_text("/proc/%s/stat" % name)
        except OSError:
            continue
        if not st:
            continue
        fields = st.rsplit(")", 1)[1].split()  # after "pid (comm)"
        if fields[0] not in ("Z", "X") and int(fields[1]) == pid:
            out.append(int(name))
    return out


def alive(pid):
    st = read_text("/proc/%d/stat" % pid)
    return bool(st) and st.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class SupervisorTest(unittest.TestCase):
    """One temporary directory per test; each run() is one supervisor."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cerebras-proxy-sup-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.sock = os.path.join(self.dir, "s.sock")
        # A prefix of our own: the per-host scheduler state is then ours to
        # remove, and no other run's.
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "CEREBRAS_API_KEYS": "k1", "REDIS_URL": "none",
                    "REDIS_PREFIX": "{cp-sup-%d}" % os.getpid(),
                    # The workers' warm-up is refused at once.
                    "CEREBRAS_API_BASE": "https://127.0.0.1:1/v1",
                    "DRAIN_TIMEOUT_MS": str(DRAIN_TIMEOUT_MS)}
        self.procs = []
        self.seen = set()   # every worker PID seen, to check none outlives a run
        self.addCleanup(self.forget_host_state)
        self.addCleanup(self.kill_all)

    def forget_host_state(self):
        fp = stack.host_state_fingerprint(BINARY, self.env)
        if fp:
            stack.remove_host_state(fp)

    def kill_all(self):
        """Whatever a failed test left running (ours only, by PID)."""
        for p in self.procs:
            if p.poll() is None:
                self.seen.update(live_children(p.pid))
                p.kill()
                p.wait()
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def run_supervisor(self, env=None):
        """Starts `--listen unix:... --processes 2`; returns (Popen, log path)."""
        log_path = os.path.join(self.dir, "run%d.log" % len(self.procs))
        log = open(log_path, "ab")
        self.addCleanup(log.close)
        p = subprocess.Popen([BINARY, "--listen", "unix:" + self.sock, "--processes", "2"],
                             env=dict(self.env, **(env or {})), stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, cwd=self.dir, start_new_session=True,
                             preexec_fn=stack._die_with_parent)
        self.procs.append(p)
        return p, log_path

    def workers(self, p, n, log_path, ready=None):
        """Waits until p has n live workers and the log has `ready` (default
        n) ready lines; returns the worker PIDs."""
        want = n if ready is None else ready

        def up():
            if p.poll() is not None:
                raise AssertionError("supervisor exited with %s:\n%s"
                                     % (p.returncode, read_text(log_path)))
            kids = live_children(p.pid)
            self.seen.update(kids)
            if len(kids) == n and read_text(log_path).count(READY_LINE) >= want:
                return kids
            return None
        try:
            return stack.wait_for(up, 10, "%d workers" % n, interval=0.002)
        except RuntimeError:
            self.fail("%d workers not up under pid %d:\n%s" % (n, p.pid, read_text(log_path)))

    def wait_log(self, p, log_path, text, count=1):
        try:
            stack.wait_for(lambda: read_text(log_path).count(text) >= count, 10, repr(text),
                           interval=0.001)
        except RuntimeError:
            self.fail("no %r under pid %d:\n%s" % (text, p.pid, read_text(log_path)))

    def new_worker(self, p, old, log_path):
        """Waits for a worker PID not in old; returns it."""
        def fresh():
            kids = live_children(p.pid)
            self.seen.update(kids)
            return [k for k in kids if k not in old]
        try:
            return stack.wait_for(fresh, 10, "a new worker", interval=0.001)[0]
        except RuntimeError:
            self.fail("no new worker under pid %d:\n%s" % (p.pid, read_text(log_path)))

    def assert_stops(self, p, log_path, bound=EXIT_BOUND, what=""):
        """SIGTERM to p: it exits with 0 within bound seconds and leaves no
        worker behind. Returns the seconds it took."""
        self.seen.update(live_children(p.pid))
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(bound)
        except subprocess.TimeoutExpired:
            self.fail("%s: supervisor %d still running %.1f s after SIGTERM (lost?):\n%s"
                      % (what, p.pid, bound, read_text(log_path)))
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, "%s:\n%s" % (what, read_text(log_path)))
        left = [k for k in self.seen if alive(k)]
        self.assertEqual(left, [], "%s: workers outlived the supervisor:\n%s"
                         % (what, read_text(log_path)))
        self.assertFalse(os.path.exists(self.sock), "socket file left behind")
        return took


class TestSupervisor(SupervisorTest):
    def test_sigterm_at_varied_moments(self):
        # Each round one supervisor and one SIGTERM, at one of these moments.
        def first_worker_ready(p, log):
            self.wait_log(p, log, READY_LINE)

        def all_ready(p, log):
            self.workers(p, 2, log)

        def just_after_a_worker_died(delay):
            def moment(p, log):
                kids = self.workers(p, 2, log)
                os.kill(kids[0], signal.SIGKILL)
                if delay:
                    time.sleep(delay)   # varies the moment; nothing to wait for
            return moment

        def when_the_death_is_reaped(p, log):
            kids = self.workers(p, 2, log)
            os.kill(kids[0], signal.SIGKILL)
            self.wait_log(p, log, "killed by signal 9; restarting")

        def replacement_forked_not_ready(p, log):
            kids = self.workers(p, 2, log)
            os.kill(kids[0], signal.SIGKILL)
            self.new_worker(p, kids, log)

        def replacement_ready(p, log):
            kids = self.workers(p, 2, log)
            os.kill(kids[0], signal.SIGKILL)
            self.new_worker(p, kids, log)
            self.workers(p, 2, log, ready=3)

        moments = [first_worker_ready, all_ready, just_after_a_worker_died(0),
                   just_after_a_worker_died(0.0005), just_after_a_worker_died(0.002),
                   when_the_death_is_reaped, replacement_forked_not_ready, replacement_ready]
        for rnd in range(VARIED_ROUNDS):
            for moment in moments:
                name = getattr(moment, "__name__", "moment")
                p, log = self.run_supervisor()
                moment(p, log)
                self.assert_stops(p, log, what="round %d, %s" % (rnd, name))

    def test_sigterm_during_the_respawn_delay(self):
        # A second death within a second waits a second to be replaced; a
        # SIGTERM meanwhile stops everything at once.
        p, log = self.run_supervisor()
        kids = self.workers(p, 2, log)
        os.kill(kids[0], signal.SIGKILL)
        fresh = self.new_worker(p, kids, log)
        os.kill(fresh, signal.SIGKILL)
        self.wait_log(p, log, "killed by signal 9; restarting", 2)
        took = self.assert_stops(p, log, what="during the respawn delay")
        self.assertLess(took, 0.9, "SIGTERM waited for the respawn delay")

    def test_dead_workers_are_replaced_at_most_once_a_second(self):
        p, log = self.run_supervisor()
        kids = self.workers(p, 2, log)
        t0 = time.monotonic()
        os.kill(kids[0], signal.SIGKILL)
        second = self.new_worker(p, kids, log)
        first_gap = time.monotonic() - t0
        self.assertLess(first_gap, 0.9, "the first replacement came late")
        t1 = time.monotonic()
        os.kill(second, signal.SIGKILL)
        third = self.new_worker(p, kids + [second], log)
        self.assertGreater(time.monotonic() - t1, 0.9, "replaced again within a second")
        # The third is up (the second may have died before it said so:
        # under ASan a worker takes longer to get ready than the test to
        # kill it).
        self.workers(p, 2, log, ready=3)
        stack.wait_for(lambda: "cerebras-proxy[%d]: info: Initialized" % third in read_text(log),
                       10, "the third worker ready")
        self.assertIn("worker %d killed by signal 9; restarting" % second, read_text(log))
        self.assertTrue(alive(third))
        self.assert_stops(p, log, what="after two replacements")

    def test_a_worker_that_does_not_drain_is_killed(self):
        # A stopped worker cannot act on its SIGTERM: the supervisor
        # SIGKILLs it after DRAIN_TIMEOUT_MS and a second, not before, and
        # still exits with 0.
        p, log = self.run_supervisor()
        kids = self.workers(p, 2, log)
        os.kill(kids[0], signal.SIGSTOP)
        took = self.assert_stops(p, log, what="stopped worker")
        self.assertGreaterEqual(took, DRAIN_TIMEOUT_MS / 1000.0 + 0.95)
        self.assertLess(took, DRAIN_TIMEOUT_MS / 1000.0 + 1.0 + 1.5)


@unittest.skipUnless(shutil.which("cc"), "no C compiler for the LD_PRELOAD shim")
class TestSupervisorWidenedWindow(SupervisorTest):
    """SIGTERM while the supervisor is about to block waiting (the shim
    holds it there for SHIM_DELAY_MS): the window in which a flag-then-
    waitpid() supervisor loses the signal."""

    @classmethod
    def setUpClass(cls):
        cls.shim_dir = tempfile.mkdtemp(prefix="cerebras-proxy-shim-")
        src = os.path.join(cls.shim_dir, "shim.c")
        cls.shim = os.path.join(cls.shim_dir, "shim.so")
        with open(src, "w") as f:
            f.write(SHIM_C)
        p = subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", cls.shim, src, "-ldl"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            shutil.rmtree(cls.shim_dir, True)
            raise RuntimeError("shim did not compile:\n" + p.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.shim_dir, True)

    def shim_env(self):
        # An ASan build would refuse a preload placed before its runtime.
        return {"LD_PRELOAD": self.shim, "SHIM_DELAY_MS": str(SHIM_DELAY_MS),
                "ASAN_OPTIONS": "verify_asan_link_order=0"}

    def test_sigterm_just_before_the_supervisor_waits(self):
        for rnd in range(WIDENED_ROUNDS):
            p, log = self.run_supervisor(self.shim_env())
            kids = self.workers(p, 2, log)
            # The death wakes the supervisor; it replaces the worker and goes
            # back to waiting, held by the shim: the SIGTERM comes then.
            os.kill(kids[rnd % 2], signal.SIGKILL)
            self.new_worker(p, kids, log)
            self.assert_stops(p, log, what="round %d" % rnd)


class TestStartedByModFcgid(SupervisorTest):
    """Not the supervisor: the one-line warning a worker gives when mod_fcgid
    started it with WORKER_THREADS > 1. mod_fcgid's spawn is reproduced: a
    listening unix socket named "<spawner's PID>.<n>" on fd 0."""

    def start_on(self, sock_name, threads):
        path = os.path.join(self.dir, sock_name)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(lsock.close)
        lsock.bind(path)
        lsock.listen(5)
        log_path = os.path.join(self.dir, "run%d.log" % len(self.procs))
        with open(log_path, "ab") as log:
            p = subprocess.Popen([BINARY], env=dict(self.env, WORKER_THREADS=str(threads)),
                                 stdin=lsock.fileno(), stdout=log, stderr=log, cwd=self.dir,
                                 start_new_session=True, preexec_fn=stack._die_with_parent)
        self.procs.append(p)
        lsock.close()
        self.wait_log(p, log_path, "Initialized with 1 API keys.")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(EXIT_BOUND), 0, read_text(log_path))
        return read_text(log_path)

    def test_warns_of_idle_threads_under_mod_fcgid_only(self):
        warning = "started by Apache mod_fcgid"
        self.assertIn(warning, self.start_on("%d.0" % os.getpid(), 2))
        self.assertNotIn(warning, self.start_on("%d.1" % os.getpid(), 1))
        self.assertNotIn(warning, self.start_on("fcgi.sock", 2))
        self.assertNotIn(warning, self.start_on("%d.2" % (os.getpid() + 1), 2))


if __name__ == "__main__":
    unittest.main()
