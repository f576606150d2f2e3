"""A small HTTP/1.1 client for the integration tests.

Raw sockets, so that the tests see exactly what the web server sent and when
each piece arrived (http.client hides chunk boundaries and timing).
"""

import json
import socket
import ssl
import time
import urllib.request


class Headers:
    """Looks up self.headers, [(name, value)] as sent, by name."""

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


class Response(Headers):
    def __init__(self):
        self.status = 0
        self.reason = ""
        self.headers = []       # [(name, value)] in order, names as sent
        self.body = b""
        self.raw_head = b""
        self.arrivals = []      # [(time.monotonic(), decoded body bytes so far)]

    def json(self):
        return json.loads(self.body)

    def events(self):
        """SSE events (the text between blank lines), in order."""
        return [e for e in self.body.decode().split("\n\n") if e]

    def text(self):
        return self.raw_head.decode("latin-1") + self.body.decode("utf-8", "replace")


class ResponseParser(Headers):
    """One HTTP/1.1 response, parsed as it arrives: feed() it what each
    recv() returned.

    Once the head is in: status, reason, headers [(name, value)] as sent and
    raw_head. The body is decoded as it comes (chunked, Content-Length, or
    up to the connection's close) into body, a chunk's data as soon as it
    arrives, not only once the whole chunk is in. done: the body is
    complete (for chunked, up to the blank line after the last chunk, so a
    kept-alive connection is left at the next response).

    The one parser of the integration tests' client (request below) and of
    the benchmark's (deploy/bench), so that both frame responses alike.
    """

    def __init__(self, method="GET"):
        self.method = method
        self.status = None
        self.reason = ""
        self.headers = []
        self.raw_head = b""
        self.body = bytearray()
        self.done = False
        self.chunked = False
        self.length = None        # Content-Length, if that frames the body
        self._buf = bytearray()
        self._state = "head"      # head | size | data | crlf | trailer | body
        self._need = 0            # bytes left of the current chunk's data

    def feed(self, data):
        """Parses data; returns the body bytes it completed (decoded)."""
        before = len(self.body)
        if self.done:
            return b""
        if self._state == "head":
            self._buf += data
            i = self._buf.find(b"\r\n\r\n")
            if i < 0:
                return b""
            self.raw_head = bytes(self._buf[:i + 4])
            data = bytes(self._buf[i + 4:])
            self._buf = bytearray()
            self._parse_head(self.raw_head[:-4])
            if self.method == "HEAD" or self.status in (204, 304):
                self.done = True
                return b""
        if self.chunked:
            self._buf += data
            self._dechunk()
        else:
            if self.length is not None:
                data = data[:self.length - len(self.body)]
            self.body += data
            if self.length is not None and len(self.body) >= self.length:
                self.done = True
        return bytes(self.body[before:])

    def _parse_head(self, head):
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        for h in lines[1:]:
            k, _, v = h.partition(":")
            self.headers.append((k.strip(), v.strip()))
        if "chunked" in (self.header("Transfer-Encoding") or "").lower():
            self.chunked = True
            self._state = "size"
        else:
            self._state = "body"
            if self.header("Content-Length") is not None:
                self.length = int(self.header("Content-Length"))

    def _dechunk(self):
        buf = self._buf
        while buf and not self.done:
            if self._state == "data":
                take = min(self._need, len(buf))
                self.body += buf[:take]
                del buf[:take]
                self._need -= take
                if self._need == 0:
                    self._state = "crlf"
                continue
            i = buf.find(b"\r\n")
            if i < 0:
                return
            line = bytes(buf[:i])
            del buf[:i + 2]
            if self._state == "size":
                self._need = int(line.split(b";")[0], 16)
                self._state = "data" if self._need else "trailer"
            elif self._state == "crlf":
                self._state = "size"
            elif line == b"":            # the blank line after the trailers
                self.done = True


class EventReader:
    """Server-sent events out of a body that arrives in pieces: feed() the
    decoded body bytes, get the events (the text between blank lines) they
    completed, as bytes."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        self._buf += data
        out = []
        while True:
            i = self._buf.find(b"\n\n")
            if i < 0:
                return out
            out.append(bytes(self._buf[:i]))
            del self._buf[:i + 2]


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
    parser = ResponseParser(method)
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data)
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
            parser.feed(chunk)
            if parser.status is None:
                continue
            if not resp.raw_head:
                resp.raw_head = parser.raw_head
                resp.status, resp.reason = parser.status, parser.reason
                resp.headers = parser.headers
                if method == "HEAD" or resp.status in (204, 304):
                    break
            resp.body = bytes(parser.body)
            resp.arrivals.append((now, resp.body))
            if on_data is not None and on_data(resp):
                break
            if parser.done:
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

    def warmups(self):
        """How many start-up warm-ups (HEAD requests) the mock has seen."""
        return self._call("GET", "/__mock/warmups").get("warmups", 0)
