#!/usr/bin/python3
"""Mock of the Cerebras chat-completions API, for integration tests.

Used by the integration tests and by ``make run`` when no real API key is
configured.  Python 3.11 standard library only.

Usage::

    mock_upstream.py --cert FILE --key FILE [--host 127.0.0.1] [--port 0]
                     [--port-file PATH] [--log PATH]

Once listening, prints exactly one line ``READY <port>`` to stdout and, if
--port-file is given, writes the port number to that file.  --log appends one
JSON line per recorded request when its response ends.  SIGTERM / SIGINT make
it exit cleanly (status 0).  Test certificates: ``tests/gen_certs.sh DIR``.

Endpoints
---------
``POST .../chat/completions``
    Recorded, then answered according to the JSON body.  The optional
    ``"mock"`` object in the body steers the answer (the proxy forwards the
    body unchanged):

    status              HTTP status (default 200).  >= 400 sends
                        ``error_body`` verbatim if given, else a flat
                        Cerebras-style error object.
    headers             extra response headers {name: value or [values]}.
                        They replace same-named default headers; the framing
                        headers Content-Length / Transfer-Encoding are ignored.
    delay_ms            sleep before the status line.
    events, gap_ms      stream: number of content events (default 3) and the
                        pause between consecutive events (default 0).
    close_after_events  stream: after that many events close the TCP
                        connection abruptly (no final chunk, no [DONE]);
                        0 = right after the response headers.
    stall_after_events, stall_ms
                        stream: pause stall_ms after that many events
                        (0 = right after the response headers).
    reply               non-stream assistant content.
    echo_auth           true: echo the Authorization header received, as a
                        gateway or upstream that leaks it would: in the
                        response header X-Echo-Authorization, in the error
                        message of a >= 400 answer (unless error_body), in
                        the reply of a JSON answer and in an extra event
                        (before the content events) of a stream.
    echo_split_ms       stream, with echo_auth: write that extra event as
                        two chunks cut in the middle of the key, this many
                        ms apart (so the proxy reads them separately).

    Per-key rules set with ``/__mock/config`` are merged over ``mock`` (rule
    fields win).

``POST .../completions``
    The legacy text completions: recorded and answered as a chat request,
    with the same ``mock`` steering, but as ``text_completion`` objects
    (``choices[].text`` instead of ``message`` / ``delta``), usage in the
    JSON body and in the stream's last event before ``[DONE]``.

``GET .../models``
    Recorded; the list of MODELS ``{"object": "list", "data": [...]}``.
    The per-key rules of ``/__mock/config`` steer it too: ``status``
    (>= 400: a flat Cerebras-style error) and ``delay_ms``.

``GET .../models/{id}``
    Recorded; the model object of MODELS with that id, else 404 with the
    flat error ``{"message": "Model ... does not exist ...", "type":
    "not_found_error", "param": "model", "code": "model_not_found"}``.
    Steered by the per-key rules as the list is.  Count the fetches in
    ``/__mock/requests`` (method GET, path).

``HEAD`` any path
    The proxy's connection warm-up: 200, no body, not recorded; counted
    (``GET /__mock/warmups`` returns {"warmups": n}).

``GET /__mock/requests``   all records (JSON array, arrival order).
``POST /__mock/reset``     clear records and key rules, seq back to 0, and
                           turn the rate-limit emulation off (configuration,
                           buckets and counters gone).  With the body
                           ``{"keep_limits": true}`` the limits configuration
                           and the bucket levels stay; only the limits
                           counters are cleared.
``POST /__mock/config``    ``{"keys": {"<bearer key>": {mock fields}}}``
                           replaces the per-key rules.
``POST /__mock/limits``    configure the rate-limit emulation (below); the
                           body ``{}`` turns it off.  400 on a bad body.
``GET /__mock/limits``     the emulation's state (below).
Control endpoints are not recorded.  Anything else: 404 JSON.

Rate-limit emulation (off by default)
-------------------------------------
Emulates Cerebras' limits per organisation and model.  While it is off the
chat answers carry the fixed x-ratelimit-* headers of STANDARD_HEADERS and
nothing below applies.  ``POST /__mock/limits`` body::

    {"orgs": {"org-a": {
        "keys":   ["sk-1", "sk-2"],
        "limits": {"requests-minute": 30, "tokens-minute": 60000},
        "models": {"big-model": {"limits": {"tokens-minute": 1000},
                                 "max_seq_len": 4096}}}}}

    keys        bearer keys of the organisation (a key in one org only).  A
                key listed nowhere is unlimited.
    limits      any of requests-minute, tokens-minute, requests-hour,
                tokens-hour, requests-day, tokens-day: positive integers.
    models      per-model overrides, merged by limit name over the org's
                limits (a null value drops that limit for the model);
                max_seq_len (default 8192) is the completion charge of a
                request without max_completion_tokens / max_tokens.

The emulation is on while at least one org is configured; ``{}`` or
``{"orgs": {}}`` turns it off.  Every POST replaces the whole configuration
and starts afresh: all buckets full, counters zero.

Each (org, model, limit) is a token bucket of capacity = limit, refilled
continuously at limit / window (60, 3600, 86400 s; time.monotonic()),
created full on first use.  A chat request (the model is the body's
"model", default llama3.1-8b) of a limited key is admitted when every
bucket holds its charge: 1 on request buckets, on token buckets the prompt
estimate plus max_completion_tokens (else max_tokens, else max_seq_len).
Admitted: every bucket is charged at once and the answer follows the
``mock`` steering as usual.  When the answer ends (completed, aborted or
the client gone) the token buckets are settled with the charged completion
tokens minus the real ones (content events sent for a stream, the reply's
word count for a JSON answer, 0 for a mock error status); a bucket never
exceeds its capacity but may go below 0 when more was produced than
charged.  Refused: nothing is charged, ``delay_ms`` and all other ``mock``
steering are ignored, and the answer is at once a 429 with no Retry-After
and the flat body
``{"message":"Tokens per minute limit exceeded - too many tokens processed.","type":"too_many_requests_error","param":"quota","code":"token_quota_exceeded"}``
(request limits: ``"Requests per minute limit exceeded - too many requests
sent."``, code ``request_quota_exceeded``; hour/day likewise).  The buckets
are checked in the order requests-minute, tokens-minute, requests-hour,
tokens-hour, requests-day, tokens-day; the first one short is the refusing
limit.  A request charging more than a bucket's capacity is always refused.

Prompt estimate (while the emulation is on, for every chat request, limited
key or not): the characters of all message contents (a string content, or
the "text" strings of a list of parts) // 4, at least 1.  The answer's
usage.prompt_tokens reports exactly this (while off it stays body_len // 4).

Headers: every chat answer of a limited key, 200 or 429, carries for each
limit L configured for its (org, model) ``x-ratelimit-limit-L`` (integer),
``x-ratelimit-remaining-L`` (floor of the level after this request's
charge, at least 0) and ``x-ratelimit-reset-L`` (seconds until the bucket is
full, 2 decimals), taken at admission, grouped limit / remaining / reset
in the order above.  They replace the x-ratelimit-* headers of
STANDARD_HEADERS (the other standard headers stay); an unlimited key's
answers carry no x-ratelimit-* header.  ``mock.headers`` still overrides.

``GET /__mock/limits`` returns::

    {"enabled": bool, "t": now, "admitted": n, "refused": n,
     "orgs": {org: {"keys": [...], "models": {model: {
         "max_seq_len": n,
         "limits": {L: {"limit": n, "window": s, "level": float,
                        "remaining": n, "reset": float}},
         "admitted": n, "refused": {L: n}, "refusal_times": [t, ...]}}}}}

listing the configured models and every model used since; levels are
refilled to "t".

Record fields: seq, t, method, path, headers, key, body_len, body_sha256,
body (the body as text, null above 1 MiB), mock (effective mock fields),
stream, status, response_body, event_times, closed_by_client,
closed_by_server, finished, t_done, and for the limits emulation: org
(null: emulation off or unlimited key), model (chat and completions: the
body's model or the default; a models/{id} fetch: the id; else null), admitted (false only for a refusal),
refused_limit (the refusing limit or null), charged_tokens (prompt plus
completion charge at admission; 0 when not charged), returned_tokens
(given back to the token buckets when the answer ended; negative when
more was produced than charged).  All times are time.monotonic()
(CLOCK_MONOTONIC, system-wide on Linux) in float seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import math
import os
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from email.utils import formatdate
from typing import Any
import urllib.parse
from urllib.parse import urlsplit

# --------------------------------------------------------------------------
# Tunables
# --------------------------------------------------------------------------

HANDSHAKE_TIMEOUT = 10.0    # seconds allowed for the TLS handshake
IDLE_TIMEOUT = 120.0        # socket timeout for keep-alive reads / writes
MAX_BODY = 64 * 1024 * 1024  # largest request body accepted
MAX_RECORDED_BODY = 1024 * 1024  # bodies above this are not stored as text
DEFAULT_MODEL = "llama3.1-8b"
# What GET .../models lists (and .../models/{id} finds).
MODELS = [
    {"id": DEFAULT_MODEL, "object": "model", "created": 1721692800, "owned_by": "Meta"},
    {"id": "qwen-3-32b", "object": "model", "created": 1745971200, "owned_by": "Alibaba"},
]
DEFAULT_REPLY = "Hello from the mock"
SYSTEM_FINGERPRINT = "fp_mock_cerebras"

# Errors meaning "the peer went away / the connection is unusable".  They are
# expected in tests (clients abort streams on purpose) and never fatal.
CONN_ERRORS = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    TimeoutError,           # socket.timeout is an alias since 3.10
    ssl.SSLError,           # includes SSLEOFError, SSLZeroReturnError
    EOFError,
)

# Response headers the proxy is expected to filter or pass through.  The
# rate-limit headers have Cerebras' shape but a tokens-minute limit so large
# that the proxy's budgets learnt from them never bind (a burst of hundreds of
# requests without max_completion_tokens, charged 8192 each, fits): tests of
# limits turn the emulation on instead.
STANDARD_HEADERS = [
    ("x-ratelimit-limit-requests-day", "14400"),
    ("x-ratelimit-remaining-requests-day", "14399"),
    ("x-ratelimit-limit-tokens-minute", "10000000"),
    ("x-ratelimit-remaining-tokens-minute", "9999970"),
    ("x-ratelimit-reset-tokens-minute", "11.38"),
    ("Keep-Alive", "timeout=60"),
    ("Set-Cookie", "mock=1; Path=/"),
    ("Access-Control-Allow-Origin", "https://upstream.invalid"),
]

# Headers a "mock.headers" override may not touch: they define the framing.
FRAMING_HEADERS = {"content-length", "transfer-encoding"}

# STANDARD_HEADERS without its rate-limit headers: the base of the headers of
# a chat answer while the limits emulation is on.
NON_LIMIT_HEADERS = [(k, v) for k, v in STANDARD_HEADERS
                     if not k.lower().startswith("x-ratelimit-")]

# Rate-limit emulation: limit names in check / header order, and windows.
LIMIT_NAMES = ("requests-minute", "tokens-minute", "requests-hour",
               "tokens-hour", "requests-day", "tokens-day")
LIMIT_WINDOWS = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}
DEFAULT_MAX_SEQ_LEN = 8192


class ClientGone(Exception):
    """A write to the client failed: it closed or reset the connection."""


class BadRequestBody(Exception):
    """The request body framing is invalid; answer with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------
# Rate-limit emulation
# --------------------------------------------------------------------------

class LimitsConfigError(ValueError):
    """A ``POST /__mock/limits`` body that does not fit the schema."""


def _limit_window(name: str) -> float:
    return LIMIT_WINDOWS[name.split("-", 1)[1]]


def _refusal_body(name: str) -> bytes:
    """The flat 429 body Cerebras sends when limit ``name`` refuses."""
    kind, per = name.split("-", 1)
    if kind == "tokens":
        msg = f"Tokens per {per} limit exceeded - too many tokens processed."
        code = "token_quota_exceeded"
    else:
        msg = f"Requests per {per} limit exceeded - too many requests sent."
        code = "request_quota_exceeded"
    return json.dumps({"message": msg, "type": "too_many_requests_error",
                       "param": "quota", "code": code},
                      separators=(",", ":")).encode()


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _parse_limit_map(obj: Any, where: str, allow_null: bool) -> dict[str, int | None]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise LimitsConfigError(f"{where}: limits must be an object")
    out: dict[str, int | None] = {}
    for name, v in obj.items():
        if name not in LIMIT_NAMES:
            raise LimitsConfigError(f"{where}: unknown limit {name!r}")
        if v is None and allow_null:
            out[name] = None
        elif _positive_int(v):
            out[name] = v
        else:
            raise LimitsConfigError(f"{where}: {name} must be a positive integer")
    return out


def _prompt_estimate(req: dict[str, Any]) -> int:
    """Characters of all message contents // 4, at least 1."""
    chars = 0
    prompt = req.get("prompt")       # a legacy completion's
    for p in prompt if isinstance(prompt, list) else [prompt]:
        if isinstance(p, str):
            chars += len(p)
    msgs = req.get("messages")
    for m in msgs if isinstance(msgs, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    chars += len(text)
    return max(1, chars // 4)


def _completion_request(req: dict[str, Any]) -> int | None:
    """max_completion_tokens, else max_tokens (non-negative ints), else None."""
    for name in ("max_completion_tokens", "max_tokens"):
        v = req.get(name)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


class _Bucket:
    """A token bucket refilled continuously at capacity / window."""

    __slots__ = ("capacity", "window", "rate", "level", "t")

    def __init__(self, capacity: int, window: float, now: float):
        self.capacity = capacity
        self.window = window
        self.rate = capacity / window
        self.level = float(capacity)
        self.t = now

    def refill(self, now: float) -> None:
        if now > self.t:
            self.level = min(float(self.capacity),
                             self.level + (now - self.t) * self.rate)
            self.t = now

    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    def reset_in(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class Admission:
    """The outcome of one limited chat request's admission check."""

    def __init__(self, org: str, model: str):
        self.org = org
        self.model = model
        self.admitted = False
        self.refused_limit: str | None = None
        self.charged = 0               # prompt + completion charge
        self.completion_charged = 0
        self.headers: list[tuple[str, str]] = []
        self.token_buckets: list[_Bucket] = []
        self.settled = False


class Limits:
    """Thread-safe rate-limit emulation: configuration, buckets, counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.orgs: dict[str, dict[str, Any]] = {}
        self.key_org: dict[str, str] = {}
        self.buckets: dict[tuple[str, str], dict[str, _Bucket]] = {}
        self.counters: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def enabled(self) -> bool:
        with self.lock:
            return bool(self.orgs)

    def configure(self, cfg: Any) -> None:
        """Replace the configuration; buckets full, counters zero."""
        if not isinstance(cfg, dict):
            raise LimitsConfigError("expected a JSON object")
        orgs_in = cfg.get("orgs", {})
        if orgs_in is None:
            orgs_in = {}
        if not isinstance(orgs_in, dict):
            raise LimitsConfigError('"orgs" must be an object')
        orgs: dict[str, dict[str, Any]] = {}
        key_org: dict[str, str] = {}
        for org, oc in orgs_in.items():
            if not isinstance(oc, dict):
                raise LimitsConfigError(f"org {org!r}: must be an object")
            keys = oc.get("keys", [])
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise LimitsConfigError(f"org {org!r}: keys must be a list of strings")
            for k in keys:
                if key_org.get(k, org) != org:
                    raise LimitsConfigError(f"key {k!r} is in two orgs")
                key_org[k] = org
            limits = _parse_limit_map(oc.get("limits"), f"org {org!r}", False)
            models_in = oc.get("models", {})
            if models_in is None:
                models_in = {}
            if not isinstance(models_in, dict):
                raise LimitsConfigError(f"org {org!r}: models must be an object")
            models: dict[str, dict[str, Any]] = {}
            for model, mc in models_in.items():
                where = f"org {org!r} model {model!r}"
                if not isinstance(mc, dict):
                    raise LimitsConfigError(f"{where}: must be an object")
                msl = mc.get("max_seq_len", DEFAULT_MAX_SEQ_LEN)
                if not _positive_int(msl):
                    raise LimitsConfigError(f"{where}: max_seq_len must be a positive integer")
                models[model] = {"limits": _parse_limit_map(mc.get("limits"), where, True),
                                 "max_seq_len": msl}
            orgs[org] = {"keys": list(keys), "limits": limits, "models": models}
        now = time.monotonic()
        with self.lock:
            self._clear()
            self.orgs = orgs
            self.key_org = key_org
            for org, oc in orgs.items():
                for model in oc["models"]:
                    self._buckets_for(org, model, now)

    def reset(self, keep_config: bool) -> None:
        """Clear the counters; unless ``keep_config`` also turn it off."""
        with self.lock:
            if keep_config:
                self.counters.clear()
            else:
                self._clear()

    # -- under self.lock --------------------------------------------------

    def _effective(self, org: str, model: str) -> tuple[dict[str, int], int]:
        """The limits (in LIMIT_NAMES order) and max_seq_len of (org, model)."""
        oc = self.orgs[org]
        merged: dict[str, int | None] = dict(oc["limits"])
        mc = oc["models"].get(model)
        if mc is not None:
            merged.update(mc["limits"])
        limits = {n: merged[n] for n in LIMIT_NAMES if merged.get(n) is not None}
        return limits, (mc["max_seq_len"] if mc is not None else DEFAULT_MAX_SEQ_LEN)

    def _buckets_for(self, org: str, model: str, now: float) -> dict[str, _Bucket]:
        b = self.buckets.get((org, model))
        if b is None:
            limits, _ = self._effective(org, model)
            b = {n: _Bucket(cap, _limit_window(n), now) for n, cap in limits.items()}
            self.buckets[(org, model)] = b
        for bucket in b.values():
            bucket.refill(now)
        return b

    def _counters_for(self, org: str, model: str) -> dict[str, Any]:
        c = self.counters.get((org, model))
        if c is None:
            c = {"admitted": 0, "refused": {}, "refusal_times": []}
            self.counters[(org, model)] = c
        return c

    # -- per request ------------------------------------------------------

    def admit(self, key: str | None, model: str, prompt_tokens: int,
              completion: int | None, now: float) -> Admission | None:
        """Check and charge; None when the key is unlimited (or it is off)."""
        with self.lock:
            org = self.key_org.get(key) if key is not None else None
            if org is None:
                return None
            _, max_seq_len = self._effective(org, model)
            adm = Admission(org, model)
            adm.completion_charged = max_seq_len if completion is None else completion
            charge = prompt_tokens + adm.completion_charged
            buckets = self._buckets_for(org, model, now)
            counters = self._counters_for(org, model)
            for name, b in buckets.items():
                need = charge if name.startswith("tokens-") else 1
                if b.level < need:
                    adm.refused_limit = name
                    break
            if adm.refused_limit is None:
                adm.admitted = True
                adm.charged = charge
                for name, b in buckets.items():
                    b.level -= charge if name.startswith("tokens-") else 1
                    if name.startswith("tokens-"):
                        adm.token_buckets.append(b)
                counters["admitted"] += 1
            else:
                r = counters["refused"]
                r[adm.refused_limit] = r.get(adm.refused_limit, 0) + 1
                counters["refusal_times"].append(now)
            hdr = adm.headers
            hdr += [(f"x-ratelimit-limit-{n}", str(b.capacity)) for n, b in buckets.items()]
            hdr += [(f"x-ratelimit-remaining-{n}", str(b.remaining())) for n, b in buckets.items()]
            hdr += [(f"x-ratelimit-reset-{n}", f"{b.reset_in():.2f}") for n, b in buckets.items()]
            return adm

    def settle(self, adm: Admission, completion_tokens: int, now: float) -> int:
        """Give back the unused completion charge; returns the tokens given."""
        with self.lock:
            if adm.settled or not adm.admitted:
                return 0
            adm.settled = True
            back = adm.completion_charged - completion_tokens
            for b in adm.token_buckets:   # buckets replaced since: harmless
                b.refill(now)
                b.level = min(float(b.capacity), b.level + back)
            return back

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self.lock:
            out: dict[str, Any] = {"enabled": bool(self.orgs), "t": now,
                                   "admitted": 0, "refused": 0, "orgs": {}}
            for org, oc in self.orgs.items():
                out["orgs"][org] = {"keys": list(oc["keys"]), "models": {}}
            pairs = sorted(set(self.buckets) | set(self.counters))
            for org, model in pairs:
                if org not in self.orgs:
                    continue
                _, msl = self._effective(org, model)
                buckets = self._buckets_for(org, model, now)
                c = self.counters.get((org, model),
                                      {"admitted": 0, "refused": {}, "refusal_times": []})
                out["orgs"][org]["models"][model] = {
                    "max_seq_len": msl,
                    "limits": {n: {"limit": b.capacity, "window": b.window,
                                   "level": b.level, "remaining": b.remaining(),
                                   "reset": round(b.reset_in(), 2)}
                               for n, b in buckets.items()},
                    "admitted": c["admitted"],
                    "refused": dict(c["refused"]),
                    "refusal_times": list(c["refusal_times"]),
                }
                out["admitted"] += c["admitted"]
                out["refused"] += sum(c["refused"].values())
            return out


# --------------------------------------------------------------------------
# Shared state: records, per-key rules, optional log file
# --------------------------------------------------------------------------

class MockState:
    """Thread-safe store of request records and per-key rules."""

    def __init__(self, log_path: str | None):
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.rules: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.warmups = 0
        self.limits = Limits()
        # Line-buffered append; opened up front so a bad path fails at start.
        self.log = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None

    def new_record(self, **fields: Any) -> dict[str, Any]:
        """Append a record with the next seq number and return it."""
        with self.lock:
            self.seq += 1
            rec = {"seq": self.seq, **fields}
            self.records.append(rec)
            return rec

    def update(self, rec: dict[str, Any], **fields: Any) -> None:
        with self.lock:
            rec.update(fields)

    def append_event_time(self, rec: dict[str, Any], t: float) -> None:
        with self.lock:
            rec["event_times"].append(t)

    def rule_for(self, key: str | None) -> dict[str, Any]:
        with self.lock:
            return dict(self.rules.get(key, {})) if key is not None else {}

    def set_rules(self, rules: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            self.rules = {k: dict(v) for k, v in rules.items()}

    def reset(self, keep_limits: bool = False) -> None:
        with self.lock:
            self.records.clear()
            self.rules.clear()
            self.seq = 0
            self.warmups = 0
        self.limits.reset(keep_limits)

    def dump_records(self) -> bytes:
        # Serialise under the lock: handler threads mutate records in place.
        with self.lock:
            return json.dumps(self.records).encode()

    def finish(self, rec: dict[str, Any]) -> None:
        """Stamp t_done and write the record to the log file, if any."""
        with self.lock:
            rec["t_done"] = time.monotonic()
            if self.log is not None:
                try:
                    self.log.write(json.dumps(rec) + "\n")
                except (OSError, ValueError):
                    pass  # logging must never break the mock

    def close(self) -> None:
        with self.lock:
            if self.log is not None:
                self.log.close()
                self.log = None


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _number(mock: dict[str, Any], name: str, default: float) -> float:
    """A non-negative number from the mock object, or ``default``."""
    v = mock.get(name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return default
    return max(0.0, float(v))


def _opt_int(mock: dict[str, Any], name: str) -> int | None:
    """A non-negative integer from the mock object, or None if absent/bad."""
    v = mock.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
        return None
    return int(v)


def _sleep_ms(ms: float) -> None:
    if ms > 0:
        time.sleep(ms / 1000.0)


def _error_obj(message: str, etype: str, code: str) -> dict[str, Any]:
    """A flat Cerebras-style error object."""
    return {"message": message, "type": etype, "param": None, "code": code}


def _error_json(message: str, etype: str, code: str) -> bytes:
    return json.dumps(_error_obj(message, etype, code)).encode()


def _chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _time_info() -> dict[str, float]:
    return {
        "queue_time": 0.000123,
        "prompt_time": 0.000456,
        "completion_time": 0.00789,
        "total_time": 0.0085,
        "created": time.time(),
    }


# --------------------------------------------------------------------------
# Request handler
# --------------------------------------------------------------------------

class MockHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive; every response is framed
    server_version = "mock-cerebras"
    timeout = IDLE_TIMEOUT          # applied to the socket in setup()
    server: "MockServer"

    # ---- plumbing -------------------------------------------------------

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # silence the default per-request stderr logging

    def handle(self) -> None:
        # A broken connection just ends this connection's thread.
        try:
            super().handle()
        except CONN_ERRORS:
            self.close_connection = True

    @property
    def state(self) -> MockState:
        return self.server.state

    def _write(self, data: bytes) -> None:
        """Send bytes straight to the socket (one sendall, no buffering)."""
        try:
            self.connection.sendall(data)
        except CONN_ERRORS as e:
            self.close_connection = True
            raise ClientGone() from e

    def _abort_connection(self) -> None:
        """Close the TCP connection abruptly (no TLS close_notify)."""
        self.close_connection = True
        try:
            # SSLSocket.shutdown() drops the TLS state without close_notify
            # and then shuts the TCP socket down: the peer sees a bare FIN.
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _start_response(self, status: int, headers: list[tuple[str, str]],
                        overrides: Any = None) -> None:
        """Send status line and headers in one write.

        ``overrides`` (the mock's ``headers`` object) replaces same-named
        headers in ``headers``, except the framing headers.
        """
        if isinstance(overrides, dict) and overrides:
            names = {str(k).lower() for k in overrides} - FRAMING_HEADERS
            headers = [(k, v) for k, v in headers if k.lower() not in names]
            for k, v in overrides.items():
                k = str(k)
                if k.lower() in FRAMING_HEADERS or not k or any(c in k for c in "\r\n:"):
                    continue
                for item in (v if isinstance(v, list) else [v]):
                    item = "" if item is None else str(item)
                    headers.append((k, item.replace("\r", " ").replace("\n", " ")))
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)   # also honours "Connection: close"
        self.end_headers()           # flushes everything with one sendall

    def _base_headers(self, seq: int | None) -> list[tuple[str, str]]:
        h = [("Server", self.server_version),
             ("Date", formatdate(usegmt=True))]
        if seq is not None:
            # A chat answer while the limits emulation is on: the headers of
            # its (org, model) (none for an unlimited key) replace the fixed
            # rate-limit headers.
            limit_headers = self._limit_headers
            std = STANDARD_HEADERS if limit_headers is None else NON_LIMIT_HEADERS + limit_headers
            h += std + [("X-Mock-Seq", str(seq))]
        return h

    def _send_body(self, status: int, body: bytes, seq: int | None = None,
                   content_type: str = "application/json",
                   overrides: Any = None) -> None:
        """Send a complete Content-Length framed response."""
        headers = self._base_headers(seq)
        if status in (204, 304):
            body = b""   # these statuses never carry a body
        else:
            headers += [("Content-Type", content_type),
                        ("Content-Length", str(len(body)))]
        self._start_response(status, headers, overrides)
        if body:
            self._write(body)

    def _send_control(self, status: int, obj: Any) -> None:
        """Answer a control / 404 request (not recorded)."""
        try:
            self._send_body(status, json.dumps(obj).encode())
        except ClientGone:
            pass

    # ---- request body ---------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the request body by Content-Length or chunked encoding.

        No Content-Length and no Transfer-Encoding means an empty body
        (RFC 9112), so a missing length never hangs.
        """
        te = self.headers.get("Transfer-Encoding")
        if te is not None:
            codings = [c.strip().lower() for c in te.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise BadRequestBody(411, "unsupported Transfer-Encoding; send Content-Length")
            return self._read_chunked()
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl.strip())
            if n < 0:
                raise ValueError
        except ValueError:
            raise BadRequestBody(400, "invalid Content-Length") from None
        if n > MAX_BODY:
            raise BadRequestBody(413, "request body too large")
        body = self.rfile.read(n)
        if len(body) != n:
            raise EOFError("client closed the connection mid-body")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise EOFError("client closed the connection mid-body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size < 0:
                    raise ValueError
            except ValueError:
                raise BadRequestBody(400, "malformed chunked body") from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                raise BadRequestBody(413, "request body too large")
            data = self.rfile.read(size)
            if len(data) != size:
                raise EOFError("client closed the connection mid-body")
            parts.append(data)
            if self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                raise BadRequestBody(400, "malformed chunked body")
        # Skip trailer fields up to the terminating empty line.
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise EOFError("client closed the connection mid-body")
            if line in (b"\r\n", b"\n"):
                return b"".join(parts)

    # ---- dispatch -------------------------------------------------------

    def _dispatch(self) -> None:
        # Per-request limits state (the handler serves a whole connection).
        self._limit_headers: list[tuple[str, str]] | None = None
        self._admission: Admission | None = None
        self._prompt_tokens: int | None = None
        self._completion_tokens = 0
        try:
            body = self._read_body()
        except BadRequestBody as e:
            # The body framing is unknown, so the connection can't be reused.
            self.close_connection = True
            self._send_control(e.status, _error_obj(
                e.message, "invalid_request_error", f"mock_{e.status}"))
            return
        t = time.monotonic()   # request line + headers + body fully read

        path = urlsplit(self.path).path
        method = self.command
        if method == "HEAD":
            with self.state.lock:
                self.state.warmups += 1
            try:
                self._start_response(200, self._base_headers(None) +
                                     [("Content-Length", "0")])
            except ClientGone:
                pass
        elif path == "/__mock/warmups" and method == "GET":
            with self.state.lock:
                n = self.state.warmups
            self._send_control(200, {"warmups": n})
        elif path == "/__mock/requests" and method == "GET":
            try:
                self._send_body(200, self.state.dump_records())
            except ClientGone:
                pass
        elif path == "/__mock/reset" and method == "POST":
            try:
                opts = json.loads(body) if body.strip() else {}
            except (ValueError, RecursionError):
                opts = {}
            keep = isinstance(opts, dict) and opts.get("keep_limits") is True
            self.state.reset(keep_limits=keep)
            self._send_control(200, {"ok": True})
        elif path == "/__mock/config" and method == "POST":
            self._handle_config(body)
        elif path == "/__mock/limits" and method == "POST":
            self._handle_limits(body)
        elif path == "/__mock/limits" and method == "GET":
            self._send_control(200, self.state.limits.snapshot())
        elif path.endswith("/chat/completions") and method == "POST":
            self._recorded(body, t, self._chat)
        elif path.endswith("/completions") and method == "POST":
            self._recorded(body, t, self._completions)
        elif path.endswith("/models") and method == "GET":
            self._recorded(body, t, self._models)
        elif "/models/" in path and method == "GET":
            self._recorded(body, t, self._model)
        else:
            self._send_control(404, _error_obj(f"no mock route for {method} {path}",
                                               "not_found_error", "mock_404"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch

    def _handle_config(self, body: bytes) -> None:
        try:
            cfg = json.loads(body)
            keys = cfg["keys"]
            if not isinstance(keys, dict) or not all(isinstance(v, dict) for v in keys.values()):
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            self._send_control(400, _error_obj('expected {"keys": {"<key>": {...}}}',
                                               "invalid_request_error", "mock_400"))
            return
        self.state.set_rules(keys)
        self._send_control(200, {"ok": True})

    def _handle_limits(self, body: bytes) -> None:
        try:
            cfg = json.loads(body) if body.strip() else {}
            self.state.limits.configure(cfg)
        except LimitsConfigError as e:
            self._send_control(400, _error_obj(f"limits: {e}",
                                               "invalid_request_error", "mock_400"))
            return
        except (ValueError, RecursionError):
            self._send_control(400, _error_obj("limits: body is not valid JSON",
                                               "invalid_request_error", "mock_400"))
            return
        self._send_control(200, {"ok": True, "enabled": self.state.limits.enabled})

    # ---- recorded endpoints ---------------------------------------------

    def _bearer_key(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            return None
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip()

    def _recorded(self, body: bytes, t: float, responder) -> None:
        """Create the record, run ``responder``, then finalise the record."""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        rec = self.state.new_record(
            t=t,
            method=self.command,
            path=self.path,
            headers=headers,
            key=self._bearer_key(),
            body_len=len(body),
            body_sha256=hashlib.sha256(body).hexdigest(),
            body=(body.decode("utf-8", "replace") if len(body) <= MAX_RECORDED_BODY else None),
            mock={},
            stream=False,
            status=None,
            response_body=None,
            event_times=[],
            closed_by_client=False,
            closed_by_server=False,
            finished=False,
            t_done=None,
            org=None,
            model=None,
            admitted=True,
            refused_limit=None,
            charged_tokens=0,
            returned_tokens=0,
        )
        try:
            responder(rec, body)
            # An abort on purpose (close_after_events) is not a completion.
            if not rec["closed_by_server"]:
                self.state.update(rec, finished=True)
        except ClientGone:
            self.state.update(rec, closed_by_client=True)
        finally:
            adm = self._admission
            if adm is not None and adm.admitted:
                back = self.state.limits.settle(adm, self._completion_tokens,
                                                time.monotonic())
                self.state.update(rec, returned_tokens=back)
            self.state.finish(rec)

    def _send_recorded(self, rec: dict[str, Any], status: int, body: bytes,
                       overrides: Any = None) -> None:
        """Send a Content-Length response for a recorded request."""
        self.state.update(rec, status=status,
                          response_body=body.decode("utf-8", "replace"))
        self._send_body(status, body, seq=rec["seq"], overrides=overrides)

    def _models_steered(self, rec: dict[str, Any]) -> bool:
        """Applies the key's rule (delay_ms, status); True if answered."""
        mock = self.state.rule_for(rec["key"])
        self.state.update(rec, mock=mock)
        _sleep_ms(_number(mock, "delay_ms", 0))
        status = mock.get("status", 200)
        if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
            self._send_recorded(rec, status, _error_json("mock error", "mock_error",
                                                         f"mock_{status}"))
            return True
        return False

    def _models(self, rec: dict[str, Any], body: bytes) -> None:
        if self._models_steered(rec):
            return
        out = {"object": "list", "data": MODELS}
        self._send_recorded(rec, 200, json.dumps(out).encode())

    def _model(self, rec: dict[str, Any], body: bytes) -> None:
        if self._models_steered(rec):
            return
        mid = urlsplit(self.path).path.rsplit("/models/", 1)[1]
        mid = urllib.parse.unquote(mid)
        self.state.update(rec, model=mid)
        for m in MODELS:
            if m["id"] == mid:
                self._send_recorded(rec, 200, json.dumps(m).encode())
                return
        self._send_recorded(rec, 404, json.dumps({
            "message": f"Model {mid} does not exist or you do not have access to it.",
            "type": "not_found_error", "param": "model",
            "code": "model_not_found"}).encode())

    def _completions(self, rec: dict[str, Any], body: bytes) -> None:
        self._chat(rec, body, legacy=True)

    def _chat(self, rec: dict[str, Any], body: bytes, legacy: bool = False) -> None:
        seq = rec["seq"]
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            self._send_recorded(rec, 400, _error_json(
                "request body is not a valid JSON object",
                "invalid_request_error", "mock_400"))
            return

        # Effective mock settings: per-key rule fields override body fields.
        mock = req.get("mock")
        mock = dict(mock) if isinstance(mock, dict) else {}
        mock.update(self.state.rule_for(rec["key"]))
        stream = req.get("stream") is True
        self.state.update(rec, mock=mock, stream=stream)

        status = mock.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            status = 200
        overrides = mock.get("headers")
        echo = self.headers.get("Authorization", "") if mock.get("echo_auth") is True else None
        if echo is not None:
            overrides = dict(overrides) if isinstance(overrides, dict) else {}
            overrides["X-Echo-Authorization"] = echo
        model = req.get("model") if isinstance(req.get("model"), str) else DEFAULT_MODEL
        self.state.update(rec, model=model)

        if self.state.limits.enabled:
            self._prompt_tokens = _prompt_estimate(req)
            adm = self.state.limits.admit(rec["key"], model, self._prompt_tokens,
                                          _completion_request(req), time.monotonic())
            self._limit_headers = adm.headers if adm is not None else []
            if adm is not None:
                self._admission = adm
                self.state.update(rec, org=adm.org, admitted=adm.admitted,
                                  refused_limit=adm.refused_limit,
                                  charged_tokens=adm.charged)
                if not adm.admitted:
                    self._send_recorded(rec, 429, _refusal_body(adm.refused_limit))
                    return

        _sleep_ms(_number(mock, "delay_ms", 0))

        if status >= 400:
            err = mock.get("error_body")
            message = "mock error" if echo is None else f"invalid header Authorization: {echo}"
            payload = (err.encode() if isinstance(err, str)
                       else _error_json(message, "mock_error", f"mock_{status}"))
            self._send_recorded(rec, status, payload, overrides)
        elif stream:
            self._stream(rec, status, model, mock, overrides, echo, legacy)
        else:
            reply = mock.get("reply", DEFAULT_REPLY)
            reply = reply if isinstance(reply, str) else json.dumps(reply)
            if echo is not None:
                reply = f"{reply} (you sent Authorization: {echo})"
            self._completion_tokens = max(1, len(reply.split()))
            choice = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if legacy:
                choice["text"] = reply
            else:
                choice["message"] = {"role": "assistant", "content": reply}
            out = {
                "id": f"{'cmpl' if legacy else 'chatcmpl'}-mock-{seq}-{uuid.uuid4().hex[:12]}",
                "object": "text_completion" if legacy else "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [choice],
                "usage": _usage(self._prompt(len(body)), self._completion_tokens),
                "time_info": _time_info(),
                "mock_seq": seq,
            }
            self._send_recorded(rec, status, json.dumps(out).encode(), overrides)

    def _prompt(self, body_len: int) -> int:
        """usage.prompt_tokens: the limits estimate while on, else body_len // 4."""
        return self._prompt_tokens if self._prompt_tokens is not None else max(1, body_len // 4)

    def _stream(self, rec: dict[str, Any], status: int, model: str,
                mock: dict[str, Any], overrides: Any, echo: str | None = None,
                legacy: bool = False) -> None:
        """Send an SSE stream, one chunk (one sendall) per event (legacy:
        text_completion events)."""
        seq = rec["seq"]
        events = _opt_int(mock, "events")
        events = 3 if events is None else events
        gap_ms = _number(mock, "gap_ms", 0)
        close_after = _opt_int(mock, "close_after_events")
        stall_after = _opt_int(mock, "stall_after_events")
        stall_ms = _number(mock, "stall_ms", 0)
        chat_id = f"{'cmpl' if legacy else 'chatcmpl'}-mock-{seq}-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        obj = "text_completion" if legacy else "chat.completion.chunk"

        def choice(text: str) -> dict[str, Any]:
            if legacy:
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
            return {"index": 0, "delta": {"content": text}, "finish_reason": None}

        headers = self._base_headers(seq) + [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("Transfer-Encoding", "chunked"),
        ]
        self.state.update(rec, status=status)
        self._start_response(status, headers, overrides)

        def checkpoint(sent: int) -> bool:
            """After ``sent`` events: maybe close or stall. False = closed."""
            if close_after is not None and sent == close_after:
                self._abort_connection()
                self.state.update(rec, closed_by_server=True)
                return False
            if stall_after is not None and sent == stall_after:
                _sleep_ms(stall_ms)
            return True

        if not checkpoint(0):
            return
        self._write(_chunk(b": mock heartbeat\n\n"))
        if echo is not None:
            event = {"id": chat_id, "object": obj, "created": created,
                     "model": model, "choices": [choice(f"you sent Authorization: {echo}")]}
            data = b"data: " + json.dumps(event).encode() + b"\n\n"
            split_ms = _opt_int(mock, "echo_split_ms")
            key = echo.partition(" ")[2].encode()
            at = data.find(key) if key else -1
            if split_ms is None or at < 0:
                self._write(_chunk(data))
            else:
                cut = at + len(key) // 2
                self._write(_chunk(data[:cut]))
                _sleep_ms(split_ms)
                self._write(_chunk(data[cut:]))
        for i in range(events):
            if i > 0:
                _sleep_ms(gap_ms)
            sent_at = time.monotonic()
            event = {
                "id": chat_id,
                "object": obj,
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [choice(f"tok{i} ")],
                "mock_seq": seq,
                "mock_index": i,
                "mock_sent": sent_at,
            }
            self._write(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
            self._completion_tokens = i + 1
            self.state.append_event_time(rec, sent_at)
            if not checkpoint(i + 1):
                return

        final = {
            "id": chat_id,
            "object": obj,
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [],
            "usage": _usage(self._prompt(rec["body_len"]), events),
            "time_info": _time_info(),
            "mock_seq": seq,
        }
        self._write(_chunk(b"data: " + json.dumps(final).encode() + b"\n\n"))
        self._write(_chunk(b"data: [DONE]\n\n"))
        self._write(b"0\r\n\r\n")   # terminating zero-length chunk


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

class MockServer(http.server.ThreadingHTTPServer):
    """Threading HTTPS server; the TLS handshake runs in the worker thread."""

    daemon_threads = True
    # A burst of new worker threads connects at once (hundreds).
    request_queue_size = 1024

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, state: MockState):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.ssl_context = ctx
        self.state = state
        super().__init__(addr, MockHandler)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        # Runs in the per-connection thread, so a slow or silent client only
        # blocks itself, never the accept loop.
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request.settimeout(HANDSHAKE_TIMEOUT)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return   # failed handshake; wrap_socket closed the socket
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection errors are routine in tests; report anything else
        # briefly and keep serving.
        exc = sys.exc_info()[1]
        if isinstance(exc, CONN_ERRORS + (OSError,)):
            return
        print(f"mock_upstream: error serving {client_address}: {exc!r}",
              file=sys.stderr, flush=True)


def _write_port_file(path: str, port: int) -> None:
    """Write the port atomically so a poller never sees a partial file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Mock Cerebras chat-completions upstream (HTTPS).")
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server private key (PEM)")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="listen port (0 = ephemeral)")
    ap.add_argument("--port-file", help="write the bound port to this file")
    ap.add_argument("--log", help="append one JSON line per recorded request")
    args = ap.parse_args(argv)

    # Start-up failures (bad cert/key, address in use, unwritable files)
    # end with a one-line message instead of a traceback.
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
        state = MockState(args.log)
        server = MockServer((args.host, args.port), ctx, state)
        port = server.server_address[1]
        if args.port_file:
            _write_port_file(args.port_file, port)
    except (OSError, ssl.SSLError, OverflowError) as e:
        print(f"mock_upstream: {e}", file=sys.stderr, flush=True)
        return 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    # serve_forever runs in a helper thread so the main thread can react to
    # signals and call shutdown() (which must not run in the serving thread).
    serving = threading.Thread(target=server.serve_forever,
                               kwargs={"poll_interval": 0.2},
                               name="mock-accept", daemon=True)
    serving.start()

    try:
        print(f"READY {port}", flush=True)
    except (BrokenPipeError, OSError):
        pass   # nobody reads stdout; keep serving

    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
