"""Benchmark cerebras-proxy against direct HTTPS and a plain nginx proxy_pass.

    python3 deploy/bench BINARY OUTDIR        (`make bench`)

Starts, inside one temporary directory and on loopback / unix sockets only:

  redis-server            unix socket (deploy/stack.py)
  mock upstream           tests/mock_upstream.py over HTTPS (paced streams)
  fast upstream           a private nginx on 127.0.0.1 serving HTTPS with the
                          test certificate: `return 200 <fixed chat.completion>`
                          on /v1/chat/completions, and a 100 MiB SSE file for
                          requests with X-Request-Id: bench-big
  B  nginx proxy_pass     a private nginx proxying to either upstream
                          (buffering off, upstream keepalive 32, HTTP/1.1,
                          proxy_ssl_session_reuse on)
  C  the stack            nginx (shipped nginx.conf.example) -> fastcgi_pass
                          -> cerebras-proxy workers -> Redis + upstream

and compares A (the upstream directly, HTTPS), B and C. Writes
OUTDIR/results.md (a markdown table, also printed) and OUTDIR/results.json.
Every process is started here and stopped by PID (deploy/stack.py's Stack).
KEEP_STACK_DIR=1 keeps the temporary directory (logs, configs).
BENCH_ONLY=phase,phase runs only those phases (sweep, latency, syscalls,
throughput, roundtrips, paced, memory, mocklatency, streaming, redisbench,
concurrency, spacing, burst, goodput); for development.
BENCH_CLIENT_ACCESS=1 (with BENCH_ONLY=sweep,throughput only) starts the
workers with every client-access feature on: a client token that wrk sends,
a client rate and a concurrency limit that never bind (their bookkeeping is
the cost measured).

The sections of the table follow the numbering of the measurements:
1 added latency, 2 throughput and CPU, 3 streaming, 4 memory, 5 Redis round
trips, 6 slot reservations per second, 7 concurrent streams, 8 spacing fidelity,
9 bursts (N streams at once to the shipped defaults), 10 goodput under the
organisations' limits (the mock's limits emulation; how to read it:
goodput.py).

The package: __main__ (the command: checks, runs, writes the results),
common (sizes, request bodies, small helpers), procfs (CPU, memory and
context switches from /proc), servers (the stack with the bench's own nginx
instances), clients (HTTP over keep-alive connections, SSE streams; the
responses parsed by the integration tests' client), tools (wrk,
redis-cli), core (class Bench: the phases in order) and the phases it is
made of: latency (1, 3), throughput (2), memory (4, 7), scheduler (5, 6, 8),
burst (9), goodput (10); report (the tables and their notes).
"""

import os
import sys

_DEPLOY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _DEPLOY)                                                  # stack
sys.path.insert(0, os.path.join(os.path.dirname(_DEPLOY), "tests", "integration"))  # client
