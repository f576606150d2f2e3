"""The stack (deploy/stack.py), with the bench's own nginx instances."""

import os

from stack import (MOCK_KEYS, Stack, can_connect, children, free_port,
                   nginx_main_conf, render_nginx_site, wait_for)

from .common import BIG_BYTES, CHAT_PATH, FAST_REPLY

BENCH_TOKEN = "cp-bench-token-0123456789"


class BenchStack(Stack):
    """deploy/stack.py's Stack plus: the fast nginx upstream, the nginx
    proxy_pass baseline, an nginx for the stack with worker_processes auto
    and many connections, and workers started with any --processes/--threads."""

    def __init__(self, binary):
        super().__init__(binary)
        self.fast_port = self.fast_plain_port = None
        self.pp_fast_port = self.pp_mock_port = None
        self.worker_shape = None
        self.big_file = os.path.join(self.dir, "big.sse")

    def _nginx(self, name, body, ports, workers="auto", conns=8192):
        conf = os.path.join(self.dir, name + ".conf")
        with open(conf, "w") as f:
            f.write(nginx_main_conf(
                self.dir, name, body, "deploy/bench", workers=workers, conns=conns,
                access_log=False, main_extra="worker_rlimit_nofile 20000;\n",
                http_extra="    keepalive_requests 100000;\n    keepalive_timeout 300s;\n"))
        self._spawn(name, ["nginx", "-p", self.dir, "-c", conf,
                           "-e", os.path.join(self.dir, name + "-error.log")])
        wait_for(lambda: (self._check_alive(name),
                          all(can_connect(("127.0.0.1", p)) for p in ports))[1],
                 10, name)

    # C: the shipped site, in an nginx with worker_processes auto.
    def start_nginx(self, port=None, prefix=None):
        self.port = port or free_port()
        self._nginx("nginx", render_nginx_site(self.fcgi_sock, self.port), [self.port])

    def start_fast_upstream(self):
        self.fast_port, self.fast_plain_port = free_port(), free_port()
        event = (b'data: {"id":"chatcmpl-big","object":"chat.completion.chunk",'
                 b'"choices":[{"index":0,"delta":{"content":"' + b"x" * 900 +
                 b'"},"finish_reason":null}]}\n\n')
        done = b"data: [DONE]\n\n"
        n = (BIG_BYTES - len(done)) // len(event)
        with open(self.big_file, "wb") as f:
            block = event * 1024
            for _ in range(n // 1024):
                f.write(block)
            f.write(event * (n % 1024))
            f.write(b" " * (BIG_BYTES - len(done) - n * len(event)) + done)
        crt = os.path.join(self.certs, "server.crt")
        key = os.path.join(self.certs, "server.key")
        body = """
    server {
        listen 127.0.0.1:%(tls)d ssl;
        listen 127.0.0.1:%(plain)d;
        ssl_certificate %(crt)s;
        ssl_certificate_key %(key)s;
        location = %(path)s {
            if ($http_x_request_id = "bench-big") { rewrite ^ /__big last; }
            default_type application/json;
            return 200 '%(reply)s';
        }
        location = /__big {
            internal;
            types { }
            default_type text/event-stream;
            alias %(big)s;
            error_page 405 =200 $uri;   # POST to a static file: serve it anyway
        }
    }""" % {"tls": self.fast_port, "plain": self.fast_plain_port, "crt": crt,
            "key": key, "path": CHAT_PATH, "reply": FAST_REPLY, "big": self.big_file}
        self._nginx("fastup", body, [self.fast_port, self.fast_plain_port], workers=1)

    def start_proxy_pass(self):
        self.pp_fast_port, self.pp_mock_port = free_port(), free_port()
        ca = self.ca_file()

        def site(port, up):
            return """
    server {
        listen 127.0.0.1:%(port)d;
        client_max_body_size 16m;
        location / {
            proxy_pass https://%(up)s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_ssl_session_reuse on;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate %(ca)s;
            proxy_ssl_name localhost;
            proxy_read_timeout 600s;
        }
    }""" % {"port": port, "up": up, "ca": ca}

        body = """
    upstream bench_fast { server 127.0.0.1:%d; keepalive 32; keepalive_requests 100000; }
    upstream bench_mock { server 127.0.0.1:%d; keepalive 32; keepalive_requests 100000; }
""" % (self.fast_port, self.mock_port)
        body += site(self.pp_fast_port, "bench_fast") + site(self.pp_mock_port, "bench_mock")
        self._nginx("ppnginx", body, [self.pp_fast_port, self.pp_mock_port])

    def stop_workers(self):
        super().stop_workers()
        self.worker_shape = None

    def fast_base(self):
        return "https://127.0.0.1:%d/v1" % self.fast_port

    def start_bench_workers(self, processes, threads=None, env=None, upstream="fast"):
        """(Re)starts the workers; waits for all processes, then warms them."""
        self.stop_workers()
        wenv = {"REDIS_URL": self.redis_url(), "CEREBRAS_API_KEYS": MOCK_KEYS,
                "CEREBRAS_CA_FILE": self.ca_file(), "RATE_LIMIT_INTERVAL_MS": "0",
                "CEREBRAS_API_BASE": self.fast_base() if upstream == "fast" else self.mock_base()}
        if os.environ.get("BENCH_CLIENT_ACCESS") == "1":
            # Every client-access feature on (throughput runs only: wrk
            # sends BENCH_AUTH): a token to check, a client rate bucket and
            # a seat in flight per request (one more Redis command each).
            wenv.update({"PROXY_TOKENS": BENCH_TOKEN, "CLIENT_RATE_LIMIT": "1000000000/s",
                         "CLIENT_MAX_CONCURRENT": "1000000"})
            os.environ["BENCH_AUTH"] = BENCH_TOKEN
        wenv.update(env or {})
        self.start_workers(processes, wenv, threads=threads)
        self.worker_shape = (processes, threads, upstream, wenv["RATE_LIMIT_INTERVAL_MS"])
        return self.procs["workers"]

    # pids by part
    def pids(self, name):
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return []
        return [p.pid] + children(p.pid)

    def worker_pids(self):
        """The worker processes (not the supervisor)."""
        p = self.procs.get("workers")
        return children(p.pid) if p else []

    def parts(self):
        return {"nginx": self.pids("nginx"), "workers": self.pids("workers"),
                "redis": self.pids("redis")}
