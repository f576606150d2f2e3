"""A small HTTP/1.1 client for the integration tests.

Raw sockets, so that the tests see exactly what the web server sent and when
each piece arrived (http.client hides chunk boundaries and timing).
"""

import json
import socket
import ssl
import time
import urllib.request


class Response:
    def __init__(self):
        self.status = 0
        self.reason = ""
        self.headers = []       # [(name, value)] in order, names as sent
        self.body = b""
        self.raw_head = b""
        self.arrivals = []      # [(time.monotonic(), decoded body bytes so far)]

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    def events(self):
        """SSE events (the text between blank lines), in order."""
        return [e for e in self.body.decode().split("\n\n") if e]

    def text(self):
        return self.raw_head.decode("latin-1") + self.body.decode("utf-8", "replace")


class ChunkedDecoder:
    """Incremental decoder of a chunked body."""

    def __init__(self):
        self.buf = b""
        self.out = b""
        self.need = None   # bytes left in the current chunk, None = size line
        self.done = False

    def feed(self, data):
        self.buf += data
        while not self.done:
            if self.need is None:
                i = self.buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(self.buf[:i].split(b";")[0], 16)
                self.buf = self.buf[i + 2:]
                if size == 0:
                    self.done = True
                    return
                self.need = size
            if len(self.buf) < self.need + 2:
                return
            self.out += self.buf[:self.need]
            self.buf = self.buf[self.need + 2:]
            self.need = None


def request(port, method="GET", path="/", body=None, headers=None, timeout=30,
            on_data=None, host="127.0.0.1", close_after=None):
    """Sends one request, returns a Response.

    on_data(resp) is called after each recv with resp.body updated; it may
    return True to stop reading (the connection is then closed: a client
    that goes away). close_after: seconds after which to hang up.
    """
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost:%d" % port,
             "Connection: close"]
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    for k, v in headers.items():
        lines.append("%s: %s" % (k, v))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    resp = Response()
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data)
        buf = b""
        dec = None
        length = None
        start = time.monotonic()
        while True:
            if close_after is not None and time.monotonic() - start > close_after:
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                if close_after is not None:
                    break
                raise
            now = time.monotonic()
            if not chunk:
                break
            if not resp.raw_head:
                buf += chunk
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    continue
                resp.raw_head = buf[:i + 4]
                head = buf[:i].decode("latin-1").split("\r\n")
                parts = head[0].split(" ", 2)
                resp.status = int(parts[1])
                resp.reason = parts[2] if len(parts) > 2 else ""
                for h in head[1:]:
                    k, _, v = h.partition(":")
                    resp.headers.append((k.strip(), v.strip()))
                chunk = buf[i + 4:]
                if (resp.header("Transfer-Encoding") or "").lower() == "chunked":
                    dec = ChunkedDecoder()
                elif resp.header("Content-Length") is not None:
                    length = int(resp.header("Content-Length"))
                if method == "HEAD" or resp.status in (204, 304):
                    break
            if dec is not None:
                dec.feed(chunk)
                resp.body = dec.out
            else:
                resp.body += chunk
            resp.arrivals.append((now, resp.body))
            if on_data is not None and on_data(resp):
                break
            if dec is not None and dec.done:
                break
            if length is not None and len(resp.body) >= length:
                break
    finally:
        s.close()
    return resp


class Mock:
    """The mock upstream's control endpoints."""

    def __init__(self, port, ca_file, host="127.0.0.1"):
        self.base = "https://%s:%d" % (host, port)
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def _call(self, method, path, obj=None):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
            return json.loads(r.read())

    def reset(self):
        return self._call("POST", "/__mock/reset", {})

    def config(self, keys):
        return self._call("POST", "/__mock/config", {"keys": keys})

    def requests(self):
        return self._call("GET", "/__mock/requests")
