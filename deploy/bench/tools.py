"""The load generator (wrk) and Redis' own counters."""

import json
import os
import re
import resource

from .common import CHAT_BODY, run

WRK_LUA = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = "Bearer " .. auth end
local limit = tonumber(os.getenv("BENCH_LIMIT") or "0")
if limit > 0 then
  local n = 0
  function response(status, headers, body)
    n = n + 1
    if n >= limit then wrk.thread:stop() end
  end
end
function done(s, lat, req)
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    s.requests, s.duration, s.bytes, s.errors.connect, s.errors.read,
    s.errors.write, s.errors.status, s.errors.timeout,
    lat:percentile(50), lat:percentile(99), lat.mean))
end
"""


class Tools:
    def __init__(self, st, outdir):
        self.st = st
        self.lua = os.path.join(st.dir, "post.lua")
        with open(self.lua, "w") as f:
            f.write(WRK_LUA)

    def wrk(self, url, conns, secs, limit=0, threads=2, body=CHAT_BODY):
        env = dict(os.environ, BENCH_BODY=body.decode(), BENCH_LIMIT=str(limit))
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = run(["wrk", "-t%d" % min(threads, conns), "-c%d" % conns, "-d%ds" % secs,
                 "--timeout", "10s", "-s", self.lua, url], env=env)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m = re.search(r"^BENCHJSON (.*)$", r.stdout, re.M)
        if not m:
            raise RuntimeError("wrk failed: %s %s" % (r.stdout[-500:], r.stderr[-500:]))
        d = json.loads(m.group(1))
        d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
        d["errors"] = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
        d["client_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return d

    def cmdstats(self, usec=False):
        """{command: calls} (or {command: (calls, usec)}) from INFO commandstats."""
        out = {}
        for line in self.st.redis_cli("INFO", "commandstats").splitlines():
            m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
            if m:
                out[m.group(1)] = ((int(m.group(2)), int(m.group(3))) if usec
                                   else int(m.group(2)))
        return out
