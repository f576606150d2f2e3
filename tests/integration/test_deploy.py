"""Deployment tests: `make install`/`make uninstall`, the systemd units
(deploy/systemd/, checked by systemd-analyze), real socket-activated runs of
the installed binary (systemd-socket-activate, cgi-fcgi), the env file
template, and the binary's command line.

systemd is not PID 1 here (a container, or CI): nothing is started through
systemd. What the units ask systemd to do is reproduced instead: the
listening socket on fd 3 with LISTEN_FDS (systemd-socket-activate), on fd 0
(StandardInput=socket), or bound by the binary (--listen) under the unit's
UMask=/Group=, as an unprivileged user like DynamicUser=.

Every process is started here, tracked by PID and stopped by PID; sockets
are unix sockets inside temporary directories.
"""

import errno
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "deploy"))
sys.path.insert(0, HERE)

import stack  # noqa: E402

BINARY = os.path.abspath(os.environ.get("CEREBRAS_PROXY_BIN",
                                        os.path.join(ROOT, "build", "cerebras-proxy")))
UNITS = ["cerebras-proxy.socket", "cerebras-proxy.service", "cerebras-proxy-listen.service"]
ENV_EXAMPLE = os.path.join(ROOT, "deploy", "cerebras-proxy.env.example")
DOCS = ["nginx.conf.example", "apache.conf.example", "deploy/cerebras-proxy.env.example"]
RUN_SOCK = "/run/cerebras-proxy/fcgi.sock"
# Variables the Makefile's install/uninstall read (set on the make command
# line, never inherited: an exported PREFIX must not change what is tested).
MAKE_VARS = ("PREFIX", "BINDIR", "SYSCONFDIR", "DOCDIR", "UNITDIR", "DESTDIR", "BUILD",
             "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
# Stand-ins for the transient UIDs/GIDs of DynamicUser= (systemd allocates
# them from 61184..65519); they need no passwd entry.
DYN_UID, DYN_GID = 61999, 61999
OTHER_UID, OTHER_GID = 61998, 61998
# Hardening both services must keep (key -> the value, or all values, the
# unit must have).
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native", "DynamicUser": "yes",
    "SupplementaryGroups": "redis", "KillSignal": "SIGTERM", "TimeoutStopSec": "15",
    "Restart": "on-failure", "StandardOutput": "journal", "StandardError": "journal",
    "EnvironmentFile": "/etc/cerebras-proxy/env",
}
# Highest `systemd-analyze security` exposure accepted (0.0 best .. 10.0).
# The units score 1.3; dropping any large part of the hardening exceeds this.
MAX_EXPOSURE = 2.0


def setUpModule():
    if not os.access(BINARY, os.X_OK):
        raise RuntimeError("no binary at %s: run make first" % BINARY)


def make(target, **variables):
    """`make -C ROOT target VAR=value...` with the already-built binary.

    BUILD is the binary's directory and `-o` marks the binary as up to date,
    so install never rebuilds it (whatever the sources' timestamps).
    """
    build = os.path.dirname(BINARY)
    argv = ["make", "--no-print-directory", "-C", ROOT, "-o", os.path.join(build, "cerebras-proxy"),
            target, "BUILD=" + build]
    argv += ["%s=%s" % kv for kv in sorted(variables.items())]
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def files_under(top):
    """{relative path: mode bits} of every non-directory below top."""
    out = {}
    for d, _dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, top)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def parse_unit(text):
    """{(section, key): [values]} of a unit file (continuation lines joined)."""
    out = {}
    section = None
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        k, sep, v = line.partition("=")
        if not sep:
            raise AssertionError("not key=value: %r" % line)
        out.setdefault((section, k.strip()), []).append(v.strip())
    return out


def parse_env_file(text):
    """An EnvironmentFile's assignments: [(name, value)] in file order."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def readme_variables():
    """{variable: default column} of README's configuration table."""
    text = read(os.path.join(ROOT, "README.md"))
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    found = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]*) \|", section, re.M))
    if len(found) < 5:
        raise RuntimeError("README's configuration table not found")
    return {k: v.strip() for k, v in found.items()}


def children(pid):
    """PIDs of the live (not zombie) child processes of pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = read("/proc/%s/stat" % name)
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()  # after "pid (comm)"
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(name))
    return out


def alive(pid):
    try:
        st = read("/proc/%d/stat" % pid)
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


def fcgi_get(sock, **popen_kw):
    """GET / over FastCGI with cgi-fcgi; (returncode, headers text, body bytes)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/"}
    p = subprocess.run(["cgi-fcgi", "-bind", "-connect", sock], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=15, **popen_kw)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    return p.returncode, head.decode("latin-1") + p.stderr.decode("latin-1"), body


def unit_argv(unit_text, binary):
    """The unit's ExecStart as argv, with the installed binary's real path."""
    execs = parse_unit(unit_text)[("Service", "ExecStart")]
    assert len(execs) == 1, execs
    argv = shlex.split(execs[0])
    return [binary] + argv[1:]


class InstallTest(unittest.TestCase):
    """A temporary DESTDIR per test, removed afterwards."""

    def setUp(self):
        self.dest = tempfile.mkdtemp(prefix="cerebras-proxy-install-")
        self.addCleanup(shutil.rmtree, self.dest, True)

    def install(self, **variables):
        variables.setdefault("DESTDIR", self.dest)
        p = make("install", **variables)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p

    def unit_text(self, name, unitdir="usr/lib/systemd/system"):
        return read(os.path.join(self.dest, unitdir, name))


class TestInstall(InstallTest):
    def expected(self, prefix="usr"):
        exp = {prefix + "/bin/cerebras-proxy": 0o755, "etc/cerebras-proxy/env": 0o600}
        for u in UNITS:
            exp[prefix + "/lib/systemd/system/" + u] = 0o644
        for d in DOCS:
            if os.path.exists(os.path.join(ROOT, d)):   # apache.conf.example may be absent
                exp[prefix + "/share/doc/cerebras-proxy/" + os.path.basename(d)] = 0o644
        return exp

    def test_install_puts_each_file_with_its_mode_and_nothing_else(self):
        self.install(PREFIX="/usr")
        self.assertEqual(files_under(self.dest), self.expected())
        self.assertEqual(read(os.path.join(self.dest, "usr/bin/cerebras-proxy"), "rb"),
                         read(BINARY, "rb"))
        for d in DOCS:
            src = os.path.join(ROOT, d)
            if os.path.exists(src):
                self.assertEqual(read(os.path.join(self.dest, "usr/share/doc/cerebras-proxy",
                                                   os.path.basename(d))), read(src), d)
        env = os.path.join(self.dest, "etc/cerebras-proxy/env")
        self.assertEqual(read(env), read(ENV_EXAMPLE))
        if os.geteuid() == 0:
            self.assertEqual(os.stat(env).st_uid, 0)

    def test_units_are_rendered_with_the_install_paths(self):
        self.install(PREFIX="/usr")
        for u in UNITS:
            text = self.unit_text(u)
            self.assertIsNone(re.search(r"@[A-Za-z_]+@", text), u)
            src = read(os.path.join(ROOT, "deploy", "systemd", u))
            if u.endswith(".service"):   # these do have placeholders
                self.assertIn("@BINDIR@/cerebras-proxy ", src)
                self.assertIn("@SYSCONFDIR@/cerebras-proxy/env", src)
            self.assertEqual(text, src.replace("@BINDIR@", "/usr/bin")
                             .replace("@SYSCONFDIR@", "/etc"), u)
            if u.endswith(".service"):
                keys = parse_unit(text)
                self.assertTrue(keys[("Service", "ExecStart")][0]
                                .startswith("/usr/bin/cerebras-proxy "), u)
                self.assertEqual(keys[("Service", "EnvironmentFile")],
                                 ["/etc/cerebras-proxy/env"], u)

    def test_default_prefix_is_usr_local_and_sysconfdir_etc(self):
        self.install()
        self.assertEqual(files_under(self.dest), self.expected("usr/local"))
        keys = parse_unit(self.unit_text("cerebras-proxy.service", "usr/local/lib/systemd/system"))
        self.assertEqual(keys[("Service", "ExecStart")],
                         ["/usr/local/bin/cerebras-proxy --processes 4"])
        self.assertEqual(keys[("Service", "EnvironmentFile")], ["/etc/cerebras-proxy/env"])

    def test_second_install_keeps_a_modified_env_file(self):
        self.install(PREFIX="/usr")
        env = os.path.join(self.dest, "etc/cerebras-proxy/env")
        mine = "CEREBRAS_API_KEYS=csk-mine-1,csk-mine-2\n"
        with open(env, "w") as f:
            f.write(mine)
        # Other installed files are replaced: damage one to see it restored.
        binary = os.path.join(self.dest, "usr/bin/cerebras-proxy")
        with open(binary, "wb") as f:
            f.write(b"damaged")
        p = self.install(PREFIX="/usr")
        self.assertEqual(read(env), mine, p.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(env).st_mode), 0o600)
        self.assertEqual(read(binary, "rb"), read(BINARY, "rb"))

    def test_uninstall_removes_everything_but_the_env_file(self):
        self.install(PREFIX="/usr")
        env = os.path.join(self.dest, "etc/cerebras-proxy/env")
        with open(env, "a") as f:
            f.write("CEREBRAS_API_KEYS=csk-keep-me\n")
        p = make("uninstall", DESTDIR=self.dest, PREFIX="/usr")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(files_under(self.dest), {"etc/cerebras-proxy/env": 0o600})
        self.assertIn("csk-keep-me", read(env))
        self.assertFalse(os.path.exists(os.path.join(self.dest, "usr/share/doc/cerebras-proxy")))
        # A second uninstall finds nothing to remove and still succeeds.
        p = make("uninstall", DESTDIR=self.dest, PREFIX="/usr")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


class TestUnitContents(InstallTest):
    """What the installed units ask of systemd (systemd-analyze checks syntax)."""

    def setUp(self):
        super().setUp()
        self.install(PREFIX="/usr")
        self.units = {u: parse_unit(self.unit_text(u)) for u in UNITS}

    def test_socket_unit(self):
        s = self.units["cerebras-proxy.socket"]
        self.assertEqual(s[("Socket", "ListenStream")], [RUN_SOCK])
        self.assertEqual(s[("Socket", "Accept")], ["no"])
        self.assertEqual(s[("Socket", "SocketMode")], ["0660"])
        self.assertEqual(s[("Socket", "SocketGroup")], ["www-data"])
        # Activates the service of the same name (no Service= pointing elsewhere).
        self.assertNotIn(("Socket", "Service"), s)
        self.assertEqual(s[("Install", "WantedBy")], ["sockets.target"])

    def test_services_keep_their_settings_and_hardening(self):
        for name in ("cerebras-proxy.service", "cerebras-proxy-listen.service"):
            u = self.units[name]
            for k, v in HARDENING.items():
                self.assertEqual(u.get(("Service", k)), [v], "%s: %s" % (name, k))
            self.assertIn("@system-service", u[("Service", "SystemCallFilter")], name)
            self.assertEqual(u[("Service", "KillMode")], ["mixed"], name)

    def test_socket_activated_service(self):
        u = self.units["cerebras-proxy.service"]
        self.assertEqual(u[("Service", "ExecStart")], ["/usr/bin/cerebras-proxy --processes 4"])
        self.assertEqual(u[("Service", "StandardInput")], ["socket"])
        self.assertEqual(u[("Service", "UMask")], ["0077"])
        self.assertIn("cerebras-proxy.socket", u[("Unit", "Requires")])

    def test_listen_service(self):
        u = self.units["cerebras-proxy-listen.service"]
        self.assertEqual(u[("Service", "ExecStart")],
                         ["/usr/bin/cerebras-proxy --listen unix:%s --processes 4" % RUN_SOCK])
        self.assertEqual(u[("Service", "RuntimeDirectory")], ["cerebras-proxy"])
        self.assertEqual(u[("Service", "Group")], ["www-data"])
        self.assertEqual(u[("Service", "UMask")], ["0007"])
        self.assertNotIn(("Service", "StandardInput"), u)
        self.assertIn("cerebras-proxy.socket", " ".join(u[("Unit", "Conflicts")]))

    def test_no_secret_in_any_unit(self):
        for name, u in self.units.items():
            for (section, key), values in u.items():
                self.assertNotIn(key, ("Environment", "PassEnvironment"), name)
                for v in values:
                    self.assertNotIn("CEREBRAS_API_KEYS", v, name)
                    self.assertNotIn("csk-", v, name)


@unittest.skipUnless(shutil.which("systemd-analyze"),
                     "systemd-analyze is not installed (apt-get install systemd)")
class TestSystemdAnalyze(unittest.TestCase):
    """systemd-analyze verify/security on the installed units.

    verify checks that ExecStart= names an executable file, so the units are
    installed with PREFIX/SYSCONFDIR inside a temporary directory (no
    DESTDIR): the rendered ExecStart= then points at the installed binary.
    (`--root=` would find the binary, but then also looks for sysinit.target
    and the other system units inside that root and fails.) verify works
    without systemd as PID 1; it loads the unit files and their dependencies
    in a test-mode manager.
    """

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cerebras-proxy-analyze-")
        p = make("install", PREFIX=cls.dir + "/usr", SYSCONFDIR=cls.dir + "/etc")
        if p.returncode != 0:
            shutil.rmtree(cls.dir, True)
            raise RuntimeError("make install failed:\n" + p.stdout + p.stderr)
        cls.unitdir = os.path.join(cls.dir, "usr/lib/systemd/system")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, True)

    def analyze(self, *args):
        env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice", SYSTEMD_COLORS="0",
                   SYSTEMD_PAGER="cat", LC_ALL="C.UTF-8")
        return subprocess.run(["systemd-analyze"] + list(args), env=env,
                              capture_output=True, text=True, timeout=60)

    def verify_findings(self, unitdir):
        """(returncode, lines about our units, other lines) of verify."""
        p = self.analyze("verify", "--man=no", "--generators=no",
                         *[os.path.join(unitdir, u) for u in UNITS])
        ours, other = [], []
        for line in (p.stdout + p.stderr).splitlines():
            # A line that names neither one of our units nor a path in our
            # temporary directory is about some unrelated unit of this
            # machine that verify loaded as a dependency (sysinit.target and
            # what it pulls in), e.g. a container's own odd units: ignored.
            if unitdir in line or self.dir in line or any(u in line for u in UNITS):
                ours.append(line)
            else:
                other.append(line)
        return p.returncode, ours, other

    def test_verify_reports_nothing_about_our_units(self):
        rc, ours, other = self.verify_findings(self.unitdir)
        self.assertEqual(ours, [], "\n".join(ours))
        self.assertEqual(rc, 0, "\n".join(ours + other))

    def test_verify_would_report_a_broken_unit(self):
        # The check above must be able to fail: the same units, one of them
        # with a typo, are reported by name.
        bad = os.path.join(self.dir, "broken")
        shutil.copytree(self.unitdir, bad)
        path = os.path.join(bad, "cerebras-proxy.service")
        text = read(path)
        self.assertIn("\nProtectClock=yes\n", text)
        with open(path, "w") as f:
            f.write(text.replace("\nProtectClock=yes\n", "\nProtectClok=yes\n"))
        _rc, ours, _other = self.verify_findings(bad)
        self.assertTrue(any("ProtectClok" in line for line in ours), ours)

    def test_security_exposure_is_low(self):
        for u in ("cerebras-proxy.service", "cerebras-proxy-listen.service"):
            p = self.analyze("security", "--offline=yes", "--threshold=%d" % (MAX_EXPOSURE * 10),
                             os.path.join(self.unitdir, u))
            m = re.search(r"Overall exposure level for %s: (\d+\.\d+)" % re.escape(u), p.stdout)
            self.assertIsNotNone(m, p.stdout + p.stderr)
            self.assertLessEqual(float(m.group(1)), MAX_EXPOSURE, p.stdout)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


@unittest.skipUnless(shutil.which("cgi-fcgi"),
                     "cgi-fcgi is not installed (apt-get install libfcgi-bin)")
class RunTest(InstallTest):
    """Runs of the installed binary the way the units start it."""

    def setUp(self):
        super().setUp()
        self.install(PREFIX="/usr")
        os.chmod(self.dest, 0o755)     # unprivileged runs must reach the binary
        self.binary = os.path.join(self.dest, "usr/bin/cerebras-proxy")
        self.rundir = os.path.join(self.dest, "run")
        os.mkdir(self.rundir, 0o755)
        self.log_path = os.path.join(self.dest, "proxy.log")
        self.procs = []
        self.addCleanup(self.forget_host_state)
        self.addCleanup(self.stop_all)

    def forget_host_state(self):
        """The per-host scheduler state the runs here made (any of the UIDs
        they run as)."""
        stack.remove_host_state(stack.host_state_fingerprint(BINARY, self.proxy_env()))

    def proxy_env(self):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "CEREBRAS_API_KEYS": "k1",
                # GET / needs no Redis; nothing listens here.
                "REDIS_URL": "unix://" + os.path.join(self.dest, "no-redis.sock")}

    def spawn(self, argv, env, **kw):
        log = open(self.log_path, "ab")
        self.addCleanup(log.close)
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=self.dest,
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def log(self):
        try:
            return read(self.log_path, "rb").decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                kids = children(p.pid)
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                for k in kids:          # only if the parent failed to stop them
                    if alive(k):
                        os.kill(k, signal.SIGKILL)

    def wait_ready(self, p, n=1):
        """Until the process tree of p has said "Initialized" n times."""
        def ready():
            if p.poll() is not None:
                raise AssertionError("exited with %s:\n%s" % (p.returncode, self.log()))
            return self.log().count("Initialized with 1 API keys.") >= n
        stack.wait_for(ready, 10, "worker start")

    def assert_get_ok(self, sock, **kw):
        rc, head, body = fcgi_get(sock, **kw)
        self.assertEqual(rc, 0, head + "\n" + self.log())
        self.assertTrue(head.startswith("Status: 200"), head + "\n" + self.log())
        self.assertEqual(body, b"OK", head)

    def assert_workers(self, p, n):
        """p has n live worker processes (polled: they start after the fork)."""
        try:
            stack.wait_for(lambda: len(children(p.pid)) == n, 10, "%d workers" % n)
        except RuntimeError:
            self.fail("expected %d worker processes under pid %d, found %d\n%s"
                      % (n, p.pid, len(children(p.pid)), self.log()))

    def assert_sigterm_stops_all(self, p):
        kids = children(p.pid)
        p.send_signal(signal.SIGTERM)
        # Idle workers exit at once; well within the unit's TimeoutStopSec.
        rc = p.wait(15)
        self.assertEqual(rc, 0, self.log())
        self.assertEqual([k for k in kids if alive(k)], [])

    def service_argv(self):
        return unit_argv(self.unit_text("cerebras-proxy.service"), self.binary)

    def unit_processes(self, name):
        argv = shlex.split(parse_unit(self.unit_text(name))[("Service", "ExecStart")][0])
        return int(argv[argv.index("--processes") + 1])


@unittest.skipUnless(shutil.which("systemd-socket-activate"),
                     "systemd-socket-activate is not installed (apt-get install systemd)")
class TestSystemdSocketActivate(RunTest):
    """systemd's own socket-activation helper: the socket on fd 3 with
    LISTEN_FDS=1 and LISTEN_PID, as a service without StandardInput=socket
    gets it. The helper execs the unit's command line on the first
    connection; keys travel in the environment (-E NAME, no value)."""

    def activate(self):
        sock = os.path.join(self.rundir, "fcgi.sock")
        argv = ["systemd-socket-activate", "-l", sock]
        env = self.proxy_env()
        for k in env:
            if k != "PATH":
                argv += ["-E", k]
        p = self.spawn(argv + self.service_argv(), env)
        # It says so after listen() (the file exists from bind() on).
        stack.wait_for(lambda: p.poll() is not None or "Listening on %s" % sock in self.log(),
                       10, "systemd-socket-activate")
        self.assertIsNone(p.poll(), self.log())
        return p, sock

    def test_first_request_starts_the_unit_command_and_is_served(self):
        p, sock = self.activate()
        self.assert_get_ok(sock)
        self.assertIn("Initialized with 1 API keys.", self.log())
        # The helper exec'd the binary in place (same PID): ours to stop.
        # Its command line is the unit's, the key is only in its environment.
        self.assertEqual(read("/proc/%d/cmdline" % p.pid, "rb").split(b"\0")[:-1],
                         [a.encode() for a in self.service_argv()])

    def test_unit_worker_count_and_sigterm(self):
        p, sock = self.activate()
        self.assert_get_ok(sock)
        self.assert_workers(p, self.unit_processes("cerebras-proxy.service"))
        self.assert_get_ok(sock)
        self.assert_sigterm_stops_all(p)


@unittest.skipUnless(os.geteuid() == 0, "needs root to run as other users")
class TestAsUnitsRunIt(RunTest):
    """The socket permissions and users of the two variants, emulated as
    root: the proxy as an unprivileged UID (DynamicUser=), the web server as
    www-data, a third user that must be refused."""

    def setUp(self):
        super().setUp()
        try:
            self.www_gid = int(subprocess.run(["getent", "group", "www-data"], capture_output=True,
                                              text=True).stdout.split(":")[2])
            self.www_uid = int(subprocess.run(["getent", "passwd", "www-data"],
                                              capture_output=True, text=True).stdout.split(":")[2])
        except (IndexError, ValueError):
            self.skipTest("no user/group www-data on this machine")

    def assert_refused(self, sock):
        rc, head, body = fcgi_get(sock, user=OTHER_UID, group=OTHER_GID, extra_groups=[])
        # cgi-fcgi exits with the errno of its failed connect().
        self.assertEqual(rc, errno.EACCES, head)
        self.assertEqual(body, b"")

    def test_standard_input_socket_like_the_socket_unit(self):
        # What cerebras-proxy.socket + StandardInput=socket give the service:
        # the socket on fd 0 and no LISTEN_FDS; the socket file belongs to
        # root, group www-data, mode 0660 (SocketGroup=, SocketMode=).
        s = parse_unit(self.unit_text("cerebras-proxy.socket"))
        sock = os.path.join(self.rundir, "fcgi.sock")
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(lsock.close)
        lsock.bind(sock)
        lsock.listen(64)
        os.chown(sock, 0, self.www_gid)
        os.chmod(sock, int(s[("Socket", "SocketMode")][0], 8))
        p = self.spawn(self.service_argv(), self.proxy_env(), stdin=lsock.fileno(),
                       user=DYN_UID, group=DYN_GID, extra_groups=[],
                       umask=int(parse_unit(self.unit_text("cerebras-proxy.service"))
                                 [("Service", "UMask")][0], 8))
        lsock.close()   # only the proxy holds it now, as under systemd
        self.wait_ready(p)
        self.assert_get_ok(sock, user=self.www_uid, group=self.www_gid, extra_groups=[])
        self.assert_refused(sock)
        self.assert_workers(p, self.unit_processes("cerebras-proxy.service"))
        self.assert_sigterm_stops_all(p)

    def test_listen_service_socket_is_reachable_by_www_data_only(self):
        # cerebras-proxy-listen.service: the binary binds the socket itself
        # in RuntimeDirectory= (owner: the service user, group: Group=,
        # RuntimeDirectoryMode=) under the unit's UMask=.
        u = parse_unit(self.unit_text("cerebras-proxy-listen.service"))
        self.assertEqual(u[("Service", "Group")], ["www-data"])
        rdir = os.path.join(self.rundir, u[("Service", "RuntimeDirectory")][0])
        os.mkdir(rdir)
        os.chown(rdir, DYN_UID, self.www_gid)
        os.chmod(rdir, int(u[("Service", "RuntimeDirectoryMode")][0], 8))
        argv = [a.replace(RUN_SOCK, os.path.join(rdir, "fcgi.sock"))
                for a in unit_argv(self.unit_text("cerebras-proxy-listen.service"), self.binary)]
        self.assertIn("unix:" + os.path.join(rdir, "fcgi.sock"), argv)
        sock = os.path.join(rdir, "fcgi.sock")
        p = self.spawn(argv, self.proxy_env(), user=DYN_UID, group=self.www_gid,
                       extra_groups=[], umask=int(u[("Service", "UMask")][0], 8))
        n = self.unit_processes("cerebras-proxy-listen.service")
        self.wait_ready(p, n)
        st = os.stat(sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual((st.st_uid, st.st_gid), (DYN_UID, self.www_gid))
        self.assertEqual(stat.S_IMODE(st.st_mode) & 0o067, 0o060,
                         "group www-data must read+write, others nothing: %o" % st.st_mode)
        self.assert_get_ok(sock, user=self.www_uid, group=self.www_gid, extra_groups=[])
        self.assert_refused(sock)
        self.assert_workers(p, n)
        self.assert_sigterm_stops_all(p)
        self.assertFalse(os.path.exists(sock), "socket file left behind")


class TestEnvExample(unittest.TestCase):
    def test_every_readme_variable_is_in_the_example(self):
        text = read(ENV_EXAMPLE)
        for var in readme_variables():
            self.assertRegex(text, r"(?m)^#?%s=" % var)

    def test_example_values_are_valid_and_the_defaults_are_the_binarys(self):
        # Uncommented, the first value given for each variable (the default,
        # or a placeholder key) must pass the binary's own configuration check
        # and change nothing but the keys and the CA file.
        text = read(ENV_EXAMPLE)
        self.assertEqual(parse_env_file(text), [], "the example must set nothing as shipped")
        values = {}
        for k, v in parse_env_file(re.sub(r"(?m)^#([A-Z])", r"\1", text)):
            values.setdefault(k, v)
        self.assertEqual(set(values), set(readme_variables()))
        path = os.environ.get("PATH", "/usr/bin:/bin")
        if not os.path.exists(values["CEREBRAS_CA_FILE"]):
            del values["CEREBRAS_CA_FILE"]   # no ca-certificates package here
        p = subprocess.run([BINARY, "--check-config"], env=dict(values, PATH=path),
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        d = subprocess.run([BINARY, "--check-config"],
                           env={"PATH": path, "CEREBRAS_API_KEYS": "k1"},
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(d.returncode, 0, d.stderr)
        # (The models cache is named after the keys too.)
        skip = ("CEREBRAS_API_KEYS=", "CEREBRAS_CA_FILE=", "# per-host models cache:")
        strip = lambda out: [ln for ln in out.splitlines() if not ln.startswith(skip)]
        self.assertEqual(strip(p.stdout), strip(d.stdout))
        self.assertIn("CEREBRAS_API_KEYS=2 keys", p.stdout)
        self.assertNotIn("REPLACE", p.stdout)


class TestCommandLine(unittest.TestCase):
    """Options that need no configuration: no CEREBRAS_API_KEYS here."""

    def run_bin(self, *args):
        return subprocess.run([BINARY] + list(args), env={"PATH": "/usr/bin:/bin"},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10)

    def test_help(self):
        p = self.run_bin("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout.startswith("usage: cerebras-proxy"), p.stdout)
        for opt in ("--listen", "--processes", "--check-config", "--version"):
            self.assertIn(opt, p.stdout)
        self.assertEqual(p.stderr, "")

    def test_version(self):
        p = self.run_bin("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"^cerebras-proxy \d+\.\d+\.\d+\b")
        self.assertEqual(p.stderr, "")

    def test_unknown_option_exits_2_with_usage(self):
        for args in (["--bogus"], ["-x"], ["--listen"], ["--processes", "0"]):
            p = self.run_bin(*args)
            self.assertEqual(p.returncode, 2, (args, p.stdout, p.stderr))
            self.assertEqual(p.stdout, "", args)
            self.assertTrue(p.stderr.strip(), args)
        self.assertIn("usage:", self.run_bin("--bogus").stderr)


if __name__ == "__main__":
    unittest.main()
