"""Sizes of the runs, the request bodies, and small helpers."""

import json
import math
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

T0 = time.monotonic()
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

CHAT_BODY = json.dumps({"model": "llama3.1-8b",
                        "messages": [{"role": "user", "content": "Hello proxy"}]},
                       separators=(",", ":")).encode()
FAST_REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "llama3.1-8b", "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "message": {"role": "assistant",
                                         "content": "Hello from the fast upstream"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    "time_info": {"queue_time": 0.0001, "prompt_time": 0.0004,
                  "completion_time": 0.007, "total_time": 0.008, "created": 1700000000.0},
}, separators=(",", ":"))
BIG_BYTES = 100 * MIB
CHAT_PATH = "/v1/chat/completions"

# Sizes of the runs (the whole bench must stay well under ~8 minutes).
LAT_N = 500              # timed requests per path and upstream
LAT_WARM = 50
LAT_ROUNDS = 10          # paths interleaved in rounds: background noise hits all alike
SPACED_N = 40            # C with the default 200 ms spacing, paced requests
SPACING_N = 60           # spacing fidelity: requests at a 100 ms interval
SWEEP = [2, 4, 8, 16, 32]
SWEEP_SECS = 3
TPUT_SECS = 5
TPUT_CONNS = [32, 256]
RT_N = 2000              # requests for the Redis round-trip count
MEM_REQUESTS = 100000
STREAMS = 10             # streams per path (50 events, 20 ms apart)
CONC = 500               # concurrent streams
CONC_EVENTS, CONC_GAP_MS = 100, 100
REDIS_BENCH_N = 200000
# Bursts: (streams, RATE_LIMIT_INTERVAL_MS) per case, all sent at once to
# --processes 4 at the shipped thread defaults; each stream BURST_EVENTS
# events BURST_GAP_MS apart (3 s).
BURST_CASES = [(20, 200), (100, 20), (300, 10)]
BURST_EVENTS, BURST_GAP_MS = 30, 100
BURST_IDLE_TIMEOUT_MS = 2000   # WORKER_IDLE_TIMEOUT_MS: "after" within seconds
BURST_SAMPLE_S = 0.1           # memory / thread sampling period during a burst
BURST_TIMEOUT_S = 360          # a case's streams are cut off after this


def progress(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def pct(values, p):
    """Nearest-rank percentile of a non-empty list."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(math.ceil(p / 100.0 * len(v))) - 1))
    return v[k]


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)
