"""The bench's clients: requests over a keep-alive connection, timed, and
SSE streams timed per event. Responses are parsed by the integration tests'
client (tests/integration/client.py), the one parser of both."""

import json
import socket
import ssl
import time

from client import EventReader, ResponseParser

from .common import CHAT_BODY, CHAT_PATH

def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class HttpConn:
    """A keep-alive HTTP/1.1 client connection (plain or TLS), small and
    constant overhead: one sendall per request, one recv() per piece of
    the answer."""

    def __init__(self, port, tls=None):
        self.port, self.tls = port, tls
        self.sock = None

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            s = self.tls.wrap_socket(s, server_hostname="127.0.0.1")
        self.sock = s

    def close(self):
        try:
            if self.sock:
                self.sock.close()
        except OSError:
            pass
        self.sock = None

    def request(self, body=CHAT_BODY, path=CHAT_PATH, extra=b""):
        """Returns (status, body). Raises OSError/ValueError on a broken connection."""
        if self.sock is None:
            self.connect()
        self.sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                          % (path.encode(), len(body), extra, body))
        p = ResponseParser("POST")
        while not p.done:
            data = self.sock.recv(65536)
            if not data:
                if p.status is None or p.chunked or p.length is not None:
                    raise ConnectionError("connection closed")
                break                        # a body up to the close: complete
            if p.feed(data) and p.chunked:
                self.t_body = time.perf_counter()   # the last body byte is in
        if not p.done or (p.header("Connection") or "").lower() == "close":
            self.close()
        return p.status, bytes(p.body)

    def timed(self, **kw):
        """(seconds, status, body); one reconnect on a connection the server closed."""
        for attempt in (0, 1):
            t0 = time.perf_counter()
            self.t_body = None
            try:
                st, body = self.request(**kw)
                t1 = time.perf_counter()
                self.body_secs = (self.t_body or t1) - t0
                return t1 - t0, st, body
            except (OSError, ValueError):
                self.close()
                if attempt:
                    raise


class MockEvents:
    """The mock's content events (dicts with mock_index) in a streamed
    response, as they complete: feed() it what each recv() returned."""

    def __init__(self):
        self.response = ResponseParser("POST")
        self.events = EventReader()
        self.got_done_marker = False

    @property
    def status(self):
        return self.response.status

    @property
    def done(self):
        return self.response.done

    def feed(self, data):
        """Returns the content events completed by data."""
        out = []
        for block in self.events.feed(self.response.feed(data)):
            for line in block.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.got_done_marker = True
                    continue
                try:
                    obj = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(obj, dict) and "mock_index" in obj:
                    out.append(obj)
        return out


def stream_request(events, gap_ms, extra=b""):
    """A streaming chat request (HTTP/1.1, Connection: close) for the mock."""
    body = json.dumps({"model": "llama3.1-8b", "stream": True,
                       "messages": [{"role": "user", "content": "Hello proxy"}],
                       "mock": {"events": events, "gap_ms": gap_ms}}).encode()
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"%sConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (CHAT_PATH.encode(), extra, len(body), body))


def stream_once(port, tls, events, gap_ms):
    """One SSE stream over a new connection; per-event lag from the mock's
    send stamp (mock_sent, time.monotonic in the mock) to our recv()."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    req = stream_request(events, gap_ms, b"Accept: text/event-stream\r\n")
    p = MockEvents()
    lags, coalesced, first, n = [], 0, None, 0
    t_send = time.monotonic()
    s.sendall(req)
    try:
        while not p.done:
            data = s.recv(65536)
            t = time.monotonic()
            if not data:
                break
            evs = p.feed(data)
            if evs:
                if first is None:
                    first = t - t_send
                coalesced += len(evs) - 1
                n += len(evs)
                lags += [t - e["mock_sent"] for e in evs]
    finally:
        s.close()
    return {"status": p.status, "events": n, "complete": n == events and p.got_done_marker,
            "lags": lags, "coalesced": coalesced, "ttfe": first}
