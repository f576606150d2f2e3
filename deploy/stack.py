#!/usr/bin/env python3
"""Start a private cerebras-proxy stack: Redis, the mock upstream, workers, nginx.

Used by `make run` (python3 deploy/stack.py run BINARY) and by the integration
tests (imported). Everything listens on loopback or on unix sockets inside one
temporary directory; every process is started here, tracked by PID and stopped
by PID.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NGINX_EXAMPLE = os.path.join(ROOT, "nginx.conf.example")
MOCK = os.path.join(ROOT, "tests", "mock_upstream.py")
GEN_CERTS = os.path.join(ROOT, "tests", "gen_certs.sh")
MOCK_KEYS = "mock-key-1,mock-key-2,mock-key-3"


def wait_for(cond, timeout, what, interval=0.01):
    """Polls cond() until it returns a true value; raises after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(interval)


def _die_with_parent():
    """In the child before exec: SIGTERM when the harness dies, so an
    aborted test run leaves no servers behind (PR_SET_PDEATHSIG)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def port_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ipv6_loopback_ok():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def can_connect(addr):
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(addr)
        return True
    except OSError:
        return False


class Template:
    """A shipped example file, edited by exact substitutions. Each must
    match, so a change to the example that the harness no longer
    understands fails loudly instead of testing something else."""

    def __init__(self, path):
        self.path = path
        with open(path) as f:
            self.text = f.read()

    def sub(self, old, new):
        if old not in self.text:
            raise RuntimeError("%s no longer contains %r" % (os.path.basename(self.path), old))
        self.text = self.text.replace(old, new)


# The shipped per-address limits (nginx.conf.example), as render_nginx_site
# finds them.
NGINX_LIMIT_CONN = "limit_conn cerebras_proxy_perip_conn 128;"
NGINX_LIMIT_REQ_ZONE = ("#limit_req_zone $binary_remote_addr "
                        "zone=cerebras_proxy_perip_req:10m rate=10r/s;")
NGINX_LIMIT_REQ = "#limit_req zone=cerebras_proxy_perip_req burst=50 nodelay;"


def render_nginx_site(sock_path, port, prefix=None, upstream_name=None, io_timeout=None,
                      front_limits=None):
    """The shipped nginx.conf.example with our port and socket path.

    front_limits: None lifts the per-address connection limit (the tests
    and the benchmark send hundreds of concurrent requests from one
    address); else {"conn": N, "rate": "Nr/s", "burst": N}: limit_conn at
    N, and limit_req, commented out as shipped, turned on with that rate
    and burst (either may be left out)."""
    t = Template(NGINX_EXAMPLE)
    sub = t.sub

    sub("server unix:/run/cerebras-proxy/fcgi.sock;", "server unix:%s;" % sock_path)
    sub("listen 127.0.0.1:8000;", "listen 127.0.0.1:%d;" % port)
    sub("listen [::1]:8000;", ("listen [::1]:%d;" % port) if ipv6_loopback_ok() else "")
    limits = front_limits or {}
    sub(NGINX_LIMIT_CONN, "limit_conn cerebras_proxy_perip_conn %d;" % limits.get("conn", 65535))
    if limits.get("rate"):
        sub(NGINX_LIMIT_REQ_ZONE, NGINX_LIMIT_REQ_ZONE[1:].replace("10r/s", limits["rate"]))
        sub(NGINX_LIMIT_REQ, NGINX_LIMIT_REQ[1:].replace("burst=50", "burst=%d"
                                                         % limits.get("burst", 0)))
    if upstream_name:
        sub("cerebras_proxy_fcgi", upstream_name)
        # Its own zones: two servers in one http {} cannot declare the same.
        sub("cerebras_proxy_perip_", upstream_name + "_perip_")
    if io_timeout:
        sub("fastcgi_read_timeout    600s;", "fastcgi_read_timeout    %ds;" % io_timeout)
    if prefix:
        sub("location / {", "location %s/ {" % prefix)
        sub("fastcgi_split_path_info ^()(/.*)$;",
            "fastcgi_split_path_info ^(%s)(/.*)$;" % prefix)
    return t.text


APACHE_EXAMPLE = os.path.join(ROOT, "apache.conf.example")
APACHE_MODULES = "/usr/lib/apache2/modules"


def render_apache_site(binary, env_file, max_procs, prefix=None, io_timeout=None,
                       read_timeout=None):
    """The shipped apache.conf.example with our binary and env file.
    read_timeout: mod_reqtimeout's header and body timeouts cut to this
    many seconds."""
    t = Template(APACHE_EXAMPLE)
    sub = t.sub

    bindir, name = os.path.split(binary)
    sub("IncludeOptional /etc/apache2/cerebras-proxy-env.conf",
        "IncludeOptional " + env_file)
    alias = "ScriptAlias / %s/" % binary
    if prefix:
        # mod_alias takes the first match: the prefix goes first.
        alias = "ScriptAlias %s %s\n%s" % (prefix, binary, alias)
    sub("ScriptAlias / /usr/local/bin/cerebras-proxy/", alias)
    sub("<Directory /usr/local/bin>", "<Directory %s>" % bindir)
    sub('<Files "cerebras-proxy">', '<Files "%s">' % name)
    sub("FcgidMaxProcessesPerClass 256", "FcgidMaxProcessesPerClass %d" % max_procs)
    sub("FcgidMinProcessesPerClass 2", "FcgidMinProcessesPerClass %d" % min(2, max_procs))
    if io_timeout:
        sub("FcgidIOTimeout 600", "FcgidIOTimeout %d" % io_timeout)
    if read_timeout:
        sub("RequestReadTimeout header=20-40,MinRate=500 body=10,MinRate=500",
            "RequestReadTimeout header=%d body=%d" % (read_timeout, read_timeout))
    return t.text


def nginx_main_conf(dirname, name, http_body, generator, workers="1", conns=4096,
                    access_log=True, main_extra="", http_extra=""):
    """nginx's main configuration for a private instance: pid file, logs and
    temporary files in dirname (named after name), http_body in http {}."""
    tmp = os.path.join(dirname, name + "-tmp")
    os.makedirs(tmp, exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    return """# generated by %(gen)s
%(user)sworker_processes %(workers)s;
%(main_extra)sdaemon off;
pid %(dir)s/%(name)s.pid;
error_log %(dir)s/%(name)s-error.log warn;
events { worker_connections %(conns)d; }
http {
    access_log %(access)s;
    client_body_temp_path %(tmp)s/body;
    fastcgi_temp_path %(tmp)s/fastcgi;
    proxy_temp_path %(tmp)s/proxy;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    default_type application/octet-stream;
%(http_extra)s    %(body)s
}
""" % {"gen": generator, "user": user, "workers": workers, "main_extra": main_extra,
       "dir": dirname, "name": name, "conns": conns, "tmp": tmp,
       "access": ("%s/%s-access.log" % (dirname, name)) if access_log else "off",
       "http_extra": http_extra, "body": http_body}


def children(pid):
    """The PIDs of pid's children (/proc/PID/task/TID/children)."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def descendants(pid):
    """The PIDs of pid's children, their children, and so on."""
    out = []
    todo = children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


SHM_DIR = "/dev/shm"
HOST_STATE_LINE = re.compile(r"^# per-host scheduler state: %s/cerebras-proxy-([0-9a-f]{8})-\d+$"
                             % re.escape(SHM_DIR), re.M)


def host_state_fingerprint(binary, env):
    """The fingerprint in the name of the per-host scheduler state (shared
    memory, shared/sched_local.c) of workers with this environment, as the
    binary itself names it: `--check-config` prints
    "# per-host scheduler state: /dev/shm/cerebras-proxy-<fingerprint>-<euid>".
    None if the binary refuses the configuration (so would its workers)."""
    p = subprocess.run([binary, "--check-config"], env=env, capture_output=True,
                       text=True, timeout=10)
    m = HOST_STATE_LINE.search(p.stdout)
    if m:
        return m.group(1)
    if p.returncode != 0:
        return None
    raise RuntimeError("%s --check-config named no per-host scheduler state:\n%s"
                       % (binary, p.stdout))


def remove_host_state(fingerprint):
    """Removes the per-host state with this fingerprint, whoever made it
    (workers may run under another UID: www-data under Apache): the
    scheduler's, the metrics' and the models cache."""
    name = re.compile(r"cerebras-proxy-(metrics\d+-|models-)?%s(-[0-9a-f]{8})?-\d+"
                      % re.escape(fingerprint))
    for f in os.listdir(SHM_DIR):
        if name.fullmatch(f):
            try:
                os.unlink(os.path.join(SHM_DIR, f))
            except FileNotFoundError:
                pass


class Stack:
    """A private stack in one temporary directory.

    Processes are started by the start_* methods and stopped, by PID, by
    stop() (or the stop_* methods). Workers can be restarted with another
    environment while Redis, the mock and nginx keep running.
    """

    def __init__(self, binary, workdir=None, quiet=True, server="nginx"):
        self.binary = os.path.abspath(binary)
        self.server = server
        self.own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="cerebras-proxy-")
        if server == "apache":
            # mod_fcgid runs the workers as Apache's user: it must reach the
            # Redis socket and the CA file in here.
            os.chmod(self.dir, 0o755)
        self.quiet = quiet
        self.procs = {}          # name -> Popen
        self.host_states = set()  # per-host scheduler state (fingerprints), removed by stop()
        self.redis_sock = os.path.join(self.dir, "redis.sock")
        self.fcgi_sock = os.path.join(self.dir, "fcgi.sock")
        self.certs = os.path.join(self.dir, "certs")
        self.mock_port = None
        self.port = None
        self.prefix_port = None
        self.worker_env = {}
        self.worker_log = os.path.join(self.dir, "workers.log")
        if server == "apache":
            self.worker_log = os.path.join(self.dir, "apache-error.log")
        self.apache_prefix = None
        self.nginx_prefix = None
        # Test-only: the web server's I/O timeout shortened to this many
        # seconds (nginx fastcgi_read_timeout, Apache FcgidIOTimeout).
        self.io_timeout = None
        # Test-only: nginx's per-address limits (render_nginx_site's
        # front_limits); None lifts them.
        self.front_limits = None
        # Test-only: Apache's mod_reqtimeout timeouts cut to this many
        # seconds (render_apache_site's read_timeout).
        self.read_timeout = None

    # -- helpers --------------------------------------------------------
    def _log(self, name):
        return open(os.path.join(self.dir, name + ".log"), "ab")

    def _spawn(self, name, argv, env=None, stdout=None, stderr=None):
        if stdout is None:
            stdout = self._log(name)
        if stderr is None:
            stderr = subprocess.STDOUT
        p = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr,
                             stdin=subprocess.DEVNULL, cwd=self.dir,
                             start_new_session=True, preexec_fn=_die_with_parent)
        self.procs[name] = p
        return p

    def _check_alive(self, name):
        p = self.procs[name]
        if p.poll() is not None:
            raise RuntimeError("%s exited with %s; see %s" % (
                name, p.returncode, os.path.join(self.dir, name + ".log")))

    def stop_proc(self, name, sig=signal.SIGTERM, timeout=15):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of its process group (each server is started in
        # a session of its own): e.g. an Apache child that outlived its
        # parent would keep the port.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()

    # -- Redis ----------------------------------------------------------
    def start_redis(self):
        self._spawn("redis", [
            "redis-server", "--port", "0", "--unixsocket", self.redis_sock,
            "--unixsocketperm", "777" if self.server == "apache" else "700", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"])
        wait_for(lambda: (self._check_alive("redis"), self.redis_cli("PING") == "PONG")[1],
                 10, "redis-server")

    def redis_url(self):
        return "unix://" + self.redis_sock

    def redis_cli(self, *args):
        r = subprocess.run(["redis-cli", "-s", self.redis_sock] + list(args),
                           capture_output=True, text=True)
        return r.stdout.strip()

    # -- mock upstream ----------------------------------------------------
    def start_mock(self):
        os.makedirs(self.certs, exist_ok=True)
        subprocess.run(["bash", GEN_CERTS, self.certs], check=True,
                       stdout=subprocess.DEVNULL)
        p = self._spawn("mock", [
            sys.executable, MOCK, "--cert", os.path.join(self.certs, "server.crt"),
            "--key", os.path.join(self.certs, "server.key"), "--port", "0",
            "--log", os.path.join(self.dir, "mock-requests.jsonl")],
            stdout=subprocess.PIPE, stderr=self._log("mock"))
        line = p.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "READY":
            raise RuntimeError("mock upstream did not start; see mock.log")
        self.mock_port = int(line[1])

    def mock_base(self):
        return "https://127.0.0.1:%d/v1" % self.mock_port

    def ca_file(self):
        return os.path.join(self.certs, "ca.crt")

    # -- workers ----------------------------------------------------------
    def start_workers(self, n=4, env=None, stderr=None, threads=None):
        """Starts `cerebras-proxy --listen unix:... --processes n`
        (and `--threads threads` if given).

        Under Apache, mod_fcgid starts the workers: this (re)starts Apache
        with their environment and at most n of them.
        """
        wenv = dict(self.worker_env)
        wenv.update(env or {})
        if self.server == "apache":
            # mod_fcgid passes on only what it is told (FcgidInitialEnv).
            self.forget_host_state(dict(wenv, PATH=os.environ.get("PATH", "/usr/bin:/bin")))
            self._start_apache(n, wenv)
            return
        full = dict(os.environ)
        full.update(wenv)
        self.forget_host_state(full)
        to_log = stderr is None
        if to_log:
            stderr = open(self.worker_log, "ab")
        if os.path.exists(self.fcgi_sock):
            os.unlink(self.fcgi_sock)
        # Counted from the log as it is now: a supervisor that restarted
        # workers (a test killed them) wrote more lines than were waited for.
        seen = self.log_text().count("Initialized with") if to_log else 0
        argv = [self.binary, "--listen", "unix:" + self.fcgi_sock, "--processes", str(n)]
        if threads:
            argv += ["--threads", str(threads)]
        self._spawn("workers", argv, env=full, stdout=stderr, stderr=stderr)
        if to_log:
            # Every worker says "Initialized with N API keys." when ready.
            target = seen + n
            started = lambda: self.log_text().count("Initialized with") >= target
        else:
            started = lambda: os.path.exists(self.fcgi_sock)
        wait_for(lambda: (self._check_alive("workers"), started())[1], 10, "workers")

    def stop_workers(self):
        self.stop_proc("apache" if self.server == "apache" else "workers")

    def log_text(self):
        try:
            with open(self.worker_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # -- nginx ------------------------------------------------------------
    def start_nginx(self, port=None, prefix=None):
        """nginx with the shipped example, plus the same site under a prefix."""
        self.port = port or free_port()
        self.nginx_prefix = prefix
        sites = [render_nginx_site(self.fcgi_sock, self.port, io_timeout=self.io_timeout,
                                   front_limits=self.front_limits)]
        if prefix:
            self.prefix_port = self.prefix_port or free_port()
            sites.append(render_nginx_site(self.fcgi_sock, self.prefix_port,
                                           prefix=prefix,
                                           upstream_name="cerebras_proxy_prefixed",
                                           io_timeout=self.io_timeout,
                                           front_limits=self.front_limits))
        with open(os.path.join(self.dir, "site.conf"), "w") as f:
            f.write("\n".join(sites))
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_main_conf(self.dir, "nginx", "include %s/site.conf;"
                                    % self.dir, generator="deploy/stack.py"))
        self._spawn("nginx", ["nginx", "-p", self.dir, "-c", conf,
                              "-e", os.path.join(self.dir, "nginx-error.log")])
        ports = [self.port] + ([self.prefix_port] if prefix else [])
        wait_for(lambda: (self._check_alive("nginx"),
                          all(can_connect(("127.0.0.1", p)) for p in ports))[1],
                 10, "nginx")

    # -- Apache -----------------------------------------------------------
    def start_server(self, port=None, prefix=None):
        if self.server == "apache":
            self.port = port or free_port()
            self.prefix_port = self.port
            self.apache_prefix = prefix
            self._apache_ready = True
        else:
            self.start_nginx(port=port, prefix=prefix)

    def restart_server(self):
        """Applies a changed io_timeout (Apache: at the next start_workers)."""
        if self.server == "nginx":
            self.stop_proc("nginx")
            wait_for(lambda: port_free(self.port), 15, "port %d to be free" % self.port)
            self.start_nginx(port=self.port, prefix=self.nginx_prefix)

    def _start_apache(self, n, env):
        """(Re)starts Apache with mod_fcgid and the shipped example."""
        import pwd
        self.stop_proc("apache")
        env_file = os.path.join(self.dir, "apache-env.conf")
        with open(env_file, "w") as f:
            for k, v in sorted(env.items()):
                f.write('FcgidInitialEnv %s "%s"\n' % (k, v.replace('"', '\\"')))
        os.chmod(env_file, 0o600)
        with open(os.path.join(self.dir, "apache-site.conf"), "w") as f:
            f.write(render_apache_site(self.binary, env_file, n, self.apache_prefix,
                                       self.io_timeout, self.read_timeout))
        ipc = os.path.join(self.dir, "fcgid")
        os.makedirs(ipc, exist_ok=True)
        os.makedirs(os.path.join(self.dir, "htdocs"), exist_ok=True)
        # Plain CGI (mod_cgid) at /cgi-bin/: a copy of the binary, whose
        # environment comes from SetEnv.
        cgi_dir = os.path.join(self.dir, "cgi-bin")
        os.makedirs(cgi_dir, exist_ok=True)
        shutil.copy(self.binary, os.path.join(cgi_dir, "cerebras-proxy.cgi"))
        cgi_env = "".join('    SetEnv %s "%s"\n' % (k, v.replace('"', '\\"'))
                          for k, v in sorted(env.items()))
        user = ""
        if os.geteuid() == 0:
            pw = pwd.getpwnam("www-data")
            os.chown(ipc, pw.pw_uid, pw.pw_gid)
            user = "User www-data\nGroup www-data\n"
        conf = os.path.join(self.dir, "apache.conf")
        m = APACHE_MODULES
        with open(conf, "w") as f:
            f.write("""# generated by deploy/stack.py
ServerRoot %(dir)s
ServerName localhost
Listen 127.0.0.1:%(port)d
PidFile %(dir)s/apache.pid
DefaultRuntimeDir %(dir)s
ErrorLog %(dir)s/apache-error.log
LogLevel warn
LoadModule mpm_event_module %(m)s/mod_mpm_event.so
LoadModule authz_core_module %(m)s/mod_authz_core.so
LoadModule alias_module %(m)s/mod_alias.so
LoadModule env_module %(m)s/mod_env.so
LoadModule headers_module %(m)s/mod_headers.so
LoadModule fcgid_module %(m)s/mod_fcgid.so
LoadModule cgid_module %(m)s/mod_cgid.so
LoadModule reqtimeout_module %(m)s/mod_reqtimeout.so
ScriptSock %(dir)s/cgid.sock
%(user)sLogFormat "%%h %%l %%u %%t \\"%%r\\" %%>s %%b" common
CustomLog %(dir)s/apache-access.log common
DocumentRoot %(dir)s/htdocs
FcgidIPCDir %(ipc)s
FcgidProcessTableFile %(ipc)s/shm
ScriptAlias /cgi-bin/ %(cgi)s/
<Directory %(cgi)s>
    Options +ExecCGI
    SetHandler cgi-script
    Require all granted
%(cgi_env)s</Directory>
Include %(dir)s/apache-site.conf
""" % {"dir": self.dir, "port": self.port, "m": m, "user": user, "ipc": ipc,
       "cgi": cgi_dir, "cgi_env": cgi_env})
        os.chmod(conf, 0o600)   # SetEnv lines hold the keys
        # The previous instance's last children may still hold the port.
        wait_for(lambda: port_free(self.port), 15, "port %d to be free" % self.port)
        self._spawn("apache", ["apache2", "-f", conf, "-DFOREGROUND"])
        wait_for(lambda: (self._check_alive("apache"),
                          can_connect(("127.0.0.1", self.port)))[1], 10, "apache")

    def access_log(self):
        return os.path.join(self.dir, self.server + "-access.log")

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    # -- all --------------------------------------------------------------
    def forget_host_state(self, env):
        """Removes the per-host scheduler state that workers with this
        (whole) environment share, so that each start begins afresh (test
        isolation); stop() removes it again."""
        fp = host_state_fingerprint(self.binary, env)
        if fp is not None:
            self.host_states.add(fp)
            remove_host_state(fp)

    def stop(self):
        for name in ("nginx", "apache", "workers", "mock", "redis"):
            self.stop_proc(name)
        for name in list(self.procs):
            self.stop_proc(name)
        for fp in self.host_states:
            remove_host_state(fp)
        if self.own_dir and os.environ.get("KEEP_STACK_DIR") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


def status_env_file(binary, port):
    """Where `make run` on port leaves what `make status` needs: the
    settings it gave the workers besides the caller's environment (the
    private Redis, the mock's address and fake keys). No real key is in it:
    those come from the caller's environment, as for `make run`."""
    return os.path.join(os.path.dirname(os.path.abspath(binary)), "run-%d.env" % port)


def status(binary, args):
    """`make status`: `cerebras-proxy status` against the `make run` stack
    on PORT, with the workers' settings."""
    port = int(os.environ.get("PORT", "8000"))
    env = dict(os.environ)
    try:
        with open(status_env_file(binary, port)) as f:
            for line in f:
                name, _, value = line.rstrip("\n").partition("=")
                if name:
                    env[name] = value
    except FileNotFoundError:
        print("make status: no `make run` stack on port %d (start one, or set PORT)" % port,
              file=sys.stderr)
        return 1
    os.execve(binary, [binary, "status"] + args, env)


def run(binary):
    """`make run`: the stack in the foreground until Ctrl-C."""
    port = int(os.environ.get("PORT", "8000"))
    workers = int(os.environ.get("WORKERS", "4"))
    st = Stack(binary, quiet=False)
    stopping = []

    def on_signal(sig, frame):
        stopping.append(sig)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        env = {}
        if not os.environ.get("REDIS_URL"):
            st.start_redis()
            env["REDIS_URL"] = st.redis_url()
            print("Started a private redis-server on %s" % st.redis_sock)
        if not os.environ.get("CEREBRAS_API_KEYS", "").replace(",", "").strip():
            st.start_mock()
            env["CEREBRAS_API_KEYS"] = MOCK_KEYS
            env["CEREBRAS_API_BASE"] = st.mock_base()
            env["CEREBRAS_CA_FILE"] = st.ca_file()
            bar = "!" * 72
            print(bar)
            print("!! CEREBRAS_API_KEYS is not set: running against the bundled MOCK")
            print("!! upstream at %s with fake keys." % st.mock_base())
            print("!! Answers are canned. Set CEREBRAS_API_KEYS=key1,key2 for real ones.")
            print(bar)
        sys.stdout.flush()
        st.start_workers(workers, env, stderr=sys.stderr)
        st.start_nginx(port=port)
        status_file = status_env_file(binary, port)
        fd = os.open(status_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join("%s=%s\n" % kv for kv in sorted(env.items())))
        print("Workers: %d processes, each with %s to %s threads as the load needs "
              "(WORKER_THREADS, WORKER_MAX_THREADS), state dir: %s" % (
                  workers, os.environ.get("WORKER_THREADS", "2"),
                  os.environ.get("WORKER_MAX_THREADS", "512"), st.dir))
        print("Listening on http://localhost:%d/ (metrics: /metrics, readiness: /readyz;"
              " `make status` in another terminal shows the keys and budgets)" % port)
        print("Press Ctrl-C to stop.")
        sys.stdout.flush()
        while not stopping:
            for name, p in list(st.procs.items()):
                if p.poll() is not None:
                    print("%s exited unexpectedly (status %s); stopping" % (name, p.returncode))
                    stopping.append(0)
                    break
            time.sleep(0.5)
    except RuntimeError as e:
        print("make run: %s" % e, file=sys.stderr)
        if os.path.exists(os.path.join(st.dir, "nginx-error.log")):
            with open(os.path.join(st.dir, "nginx-error.log")) as f:
                sys.stderr.write(f.read()[-2000:])
        st.stop()
        return 1
    print("Stopping...")
    st.stop()
    try:
        os.unlink(status_env_file(binary, port))
    except FileNotFoundError:
        pass
    print("Stopped.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "status":
        sys.exit(status(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        print("usage: stack.py run BINARY | stack.py status BINARY [--json]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[2]))
