"""Helpers of the multi-host test (tests/multihost/run.py): network
namespaces joined by a bridge, processes started in them and stopped by PID,
the mock upstream's control endpoints, client load loops and the figures.

Topology, all in namespaces this module creates (nothing in the caller's
network namespace is touched):

    cpx-<pid>-<rand>-hub   bridge br0 10.A.B.1/24; redis-server and the HTTPS
                           mock on 10.A.B.1; the clients (the test process
                           itself joins this namespace)
    cpx-<pid>-<rand>-h1..3 eth0 10.A.B.11..13/24 (veth, peer vhN on br0);
                           nginx on :8080 and a worker pool each; a private
                           tmpfs on /dev/shm (a host's own per-host scheduler)
"""

import ctypes
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "deploy"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import stack  # noqa: E402
import client  # noqa: E402
from client import request  # noqa: E402

NS_PREFIX = "cpx-mh-"
CLONE_NEWNET = 0x40000000
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"

_libc = ctypes.CDLL(None, use_errno=True)


def sh(argv, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                   (r.stderr or r.stdout).strip()))
    return r


def setns_path(path):
    """Moves the calling thread (call it while single-threaded: threads
    started later inherit it) into the network namespace at path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)


def netns_unavailable():
    """None if namespaces can be made here, else the reason why not."""
    if os.geteuid() != 0:
        return "not root (ip netns needs CAP_SYS_ADMIN)"
    for tool in ("ip", "nginx", "redis-server", "redis-cli", "openssl"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(":") + ["/usr/sbin", "/sbin"]):
            return "%s not found" % tool
    probe = "%sprobe-%d" % (NS_PREFIX, os.getpid())
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns add failed: %s" % r.stderr.strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def stale_namespaces():
    """Our namespaces left by a run that died by SIGKILL: owner PID gone and
    no process inside. They are deleted (they hold nothing)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", name)
        if not m or os.path.exists("/proc/%s" % m.group(1)):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                              text=True).stdout.split()
        if not pids:
            out.append(name)
    return out


def stale_dirs(tmp):
    """Temporary directories of runs that died by SIGKILL (owner PID gone),
    once none of that run's namespaces is left (a process still in one may
    use the directory)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    busy = set(re.findall(re.escape(NS_PREFIX) + r"(\d+)-", r.stdout))
    out = []
    for name in os.listdir(tmp):
        m = re.match(re.escape(NS_PREFIX) + r"(\d+)-", name)
        if m and m.group(1) not in busy and not os.path.exists("/proc/%s" % m.group(1)):
            out.append(os.path.join(tmp, name))
    return out


# -- processes ---------------------------------------------------------------

class Proc:
    """A process started in a namespace (ip netns exec execs in place, so
    the PID is the command's), in a session of its own, SIGTERMed if the
    test process dies (PR_SET_PDEATHSIG)."""

    ALL = []

    def __init__(self, name, ns, argv, log, env=None, stdout=None):
        self.name = name
        self.log = log
        logf = open(log, "ab")
        self.p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, env=env,
                                  stdin=subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else logf,
                                  stderr=logf, start_new_session=True,
                                  preexec_fn=stack._die_with_parent)
        logf.close()
        self.pid = self.p.pid
        Proc.ALL.append(self)

    def alive(self):
        return self.p.poll() is None

    def check(self):
        if not self.alive():
            raise RuntimeError("%s exited with %s; see %s" % (self.name, self.p.returncode,
                                                              self.log))

    def children(self):
        """PIDs of its child processes (nginx workers, pool workers)."""
        kids = set()
        try:
            tids = os.listdir("/proc/%d/task" % self.pid)
        except OSError:
            return []
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/children" % (self.pid, tid)) as f:
                    kids.update(int(x) for x in f.read().split())
            except OSError:
                # That thread ended between the listing and the read.
                pass
        return sorted(kids)

    def sigkill_all(self):
        """SIGKILL the process, then its children, each by PID (the dead
        parent can restart nobody), then what is left of its process group."""
        kids = self.children()
        killed = []
        for pid in [self.pid] + kids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.p.wait()
        return killed

    def term(self):
        """SIGTERM (the graceful stop); reap() waits for it."""
        self.t_term = time.monotonic()
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)

    def reap(self, timeout=12):
        """Waits up to timeout after term() for the process to exit, then
        SIGKILLs what is left of its process group. Returns (seconds from
        SIGTERM to exit, True if it had to be killed)."""
        forced = False
        try:
            self.p.wait(max(0.0, self.t_term + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            forced = True
        took = time.monotonic() - self.t_term
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self in Proc.ALL:
            Proc.ALL.remove(self)
        return took, forced

    def stop(self, timeout=12):
        self.term()
        return self.reap(timeout)


# -- the network ---------------------------------------------------------------

class Net:
    """The hub namespace and three host namespaces, joined by a bridge."""

    def __init__(self, nhosts=3):
        tag = "%s%d-%04x" % (NS_PREFIX, os.getpid(), random.getrandbits(16))
        a, b = random.randint(64, 250), random.randint(1, 254)
        self.subnet = "10.%d.%d" % (a, b)
        self.hub = tag + "-hub"
        self.hub_ip = self.subnet + ".1"
        self.hosts = [("h%d" % i, tag + "-h%d" % i, "%s.%d" % (self.subnet, 10 + i))
                      for i in range(1, nhosts + 1)]
        self.made = []
        self._home = None

    def create(self):
        def ip(*args):
            sh(["ip"] + list(args))

        ip("netns", "add", self.hub)
        self.made.append(self.hub)
        ip("-n", self.hub, "link", "set", "lo", "up")
        ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        ip("-n", self.hub, "addr", "add", self.hub_ip + "/24", "dev", "br0")
        ip("-n", self.hub, "link", "set", "br0", "up")
        for short, ns, addr in self.hosts:
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            # Made inside the hub, its peer straight into the host: the
            # caller's namespace never sees either end.
            ip("-n", self.hub, "link", "add", "v" + short, "type", "veth",
               "peer", "name", "eth0", "netns", ns)
            ip("-n", self.hub, "link", "set", "v" + short, "master", "br0", "up")
            ip("-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def enter_hub(self):
        """The test process (clients, redis-cli, mock control) joins the hub."""
        self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        setns_path("/run/netns/" + self.hub)

    def leave_hub(self):
        if self._home is not None:
            if _libc.setns(self._home, CLONE_NEWNET) != 0:
                print("warning: could not return to the original network namespace",
                      file=sys.stderr)
            os.close(self._home)
            self._home = None

    def destroy(self):
        self.leave_hub()
        left = []
        for ns in reversed(self.made):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if r.returncode != 0 and "No such file" not in r.stderr:
                left.append("%s (%s)" % (ns, r.stderr.strip()))
        self.made = []
        return left


# -- certificates ----------------------------------------------------------------

def make_certs(certs_dir, ip):
    """The test CA and a localhost leaf (tests/gen_certs.sh), plus a leaf for
    the hub's address signed by that CA (gen_certs.sh covers only
    localhost, 127.0.0.1 and ::1)."""
    sh(["bash", stack.GEN_CERTS, certs_dir])
    key = os.path.join(certs_dir, "hub.key")
    csr = os.path.join(certs_dir, "hub.csr")
    crt = os.path.join(certs_dir, "hub.crt")
    ext = os.path.join(certs_dir, "hub.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
                "subjectAltName = IP:%s\n" % ip)
    sh(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", key])
    sh(["openssl", "req", "-new", "-key", key, "-subj", "/CN=%s" % ip, "-out", csr])
    sh(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(certs_dir, "ca.crt"),
        "-CAkey", os.path.join(certs_dir, "ca.key"), "-set_serial",
        "0x%016x" % random.getrandbits(63), "-sha256", "-days", "2", "-extfile", ext,
        "-out", crt])
    sh(["openssl", "verify", "-CAfile", os.path.join(certs_dir, "ca.crt"), crt])
    return crt, key


# -- mock upstream ------------------------------------------------------------------

class Mock(client.Mock):
    def __init__(self, ip, port, ca_file):
        super().__init__(port, ca_file, host=ip)

    def count(self):
        return len(self.requests())

    def set_limits(self, cfg):
        """Turns the rate-limit emulation on with cfg ({"orgs": ...}; see
        tests/mock_upstream.py), buckets full; {} turns it off."""
        return self._call("POST", "/__mock/limits", cfg)

    def limits(self):
        """The emulation's state: admitted / refused per org and model."""
        return self._call("GET", "/__mock/limits")


# -- client load ------------------------------------------------------------------

CHAT_BODY = {"model": "llama3.1-8b", "messages": [{"role": "user", "content": "hi"}]}


class Result:
    __slots__ = ("host", "rid", "t0", "t1", "status", "error", "queue_ms")

    def __init__(self, host, rid, t0):
        self.host, self.rid, self.t0 = host, rid, t0
        self.t1 = None
        self.status = 0
        self.error = None
        self.queue_ms = None


def chat(ip, rid, body=None, timeout=20, headers=None):
    r = request(8080, "POST", "/v1/chat/completions", body or CHAT_BODY,
                dict(headers or {}, **{"X-Request-Id": rid}), timeout=timeout, host=ip)
    return r


class Load:
    """loops_per_host client loops per host, each sending one request at a
    time until stop() (or until its first error: a host that was killed
    refuses connections, and a loop must not spin on that)."""

    def __init__(self, tag, hosts, loops_per_host):
        self.tag = tag
        self.hosts = hosts            # [(short, ip)]
        self.loops = loops_per_host
        self.results = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.inflight = {short: 0 for short, _ in hosts}
        self.threads = []

    def _loop(self, short, ip, n):
        seq = 0
        while not self.stopping.is_set():
            rid = "%s-%s-%d-%d" % (self.tag, short, n, seq)
            seq += 1
            res = Result(short, rid, time.monotonic())
            with self.lock:
                self.inflight[short] += 1
            try:
                r = chat(ip, rid)
                res.status = r.status
                m = re.search(r"queue;dur=([\d.]+)", r.header("Server-Timing") or "")
                if m:
                    res.queue_ms = float(m.group(1))
                if r.status == 0:
                    res.error = "connection closed without an answer"
            except OSError as e:
                res.error = "%s: %s" % (type(e).__name__, e)
            res.t1 = time.monotonic()
            with self.lock:
                self.inflight[short] -= 1
                self.results.append(res)
            if res.error or res.status != 200:
                return

    def start(self):
        self.t_start = time.monotonic()
        for short, ip in self.hosts:
            for n in range(self.loops):
                t = threading.Thread(target=self._loop, args=(short, ip, n), daemon=True)
                t.start()
                self.threads.append(t)

    def stop(self, timeout=30):
        self.t_stop = time.monotonic()
        self.stopping.set()
        for t in self.threads:
            t.join(max(0.1, self.t_stop + timeout - time.monotonic()))
        self.t_end = time.monotonic()
        return not any(t.is_alive() for t in self.threads)


# -- figures ------------------------------------------------------------------------

def gaps_ms(ts):
    ts = sorted(ts)
    return [(b - a) * 1000.0 for a, b in zip(ts, ts[1:])]


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def rate(ts):
    ts = sorted(ts)
    if len(ts) < 2 or ts[-1] <= ts[0]:
        return 0.0
    return (len(ts) - 1) / (ts[-1] - ts[0])


def pct(xs, p):
    s = sorted(xs)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]
