"""`python3 deploy/bench BINARY OUTDIR`: see __init__.py."""

import json
import os
import platform
import shutil
import signal
import sys
import time

# Run as a directory, this file's own directory is first on the path: the
# package is imported from its parent instead (and nothing of it is
# importable under a bare name, such as a "stack" of its own).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench.common import ROOT, T0, progress, run  # noqa: E402
from bench.core import Bench  # noqa: E402
from bench.report import report  # noqa: E402


def meta(binary):
    def first(argv):
        try:
            r = run(argv)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    rev = run(["git", "-C", ROOT, "rev-parse", "HEAD"]).stdout.strip() or "?"
    dirty = bool(run(["git", "-C", ROOT, "status", "--porcelain",
                      "--untracked-files=no"]).stdout.strip())
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": rev, "dirty": dirty,
            "uname": " ".join(platform.uname()[:3] + (platform.uname().machine,)),
            "nproc": os.cpu_count(), "loadavg_at_start": load,
            "nginx": first(["nginx", "-v"]), "redis": first(["redis-server", "--version"]),
            "curl": first(["curl", "--version"]), "wrk": first(["wrk", "-v"]),
            "proxy": first([binary, "--version"]), "python": sys.version.split()[0]}


def main():
    if len(sys.argv) != 3:
        print("usage: python3 deploy/bench BINARY OUTDIR", file=sys.stderr)
        return 2
    binary, outdir = sys.argv[1], sys.argv[2]
    for tool in ("wrk", "nginx", "redis-server", "redis-cli", "redis-benchmark"):
        if shutil.which(tool) is None:
            print("bench: %s is not installed (make test-deps)" % tool, file=sys.stderr)
            return 1
    os.makedirs(outdir, exist_ok=True)
    b = Bench(binary, outdir)
    b.R["meta"] = meta(b.binary)

    def on_signal(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        b.run_all()
    except KeyboardInterrupt:
        progress("interrupted; stopping")
        rc = 130
    except Exception as e:    # report what we have, then fail
        import traceback
        traceback.print_exc()
        b.notes.append("The bench FAILED: %r; results are partial." % (e,))
        rc = 1
    finally:
        b.st.stop()
    elapsed = time.monotonic() - T0
    b.R["elapsed_s"] = round(elapsed, 1)
    with open("/proc/loadavg") as f:
        b.R["meta"]["loadavg_at_end"] = " ".join(f.read().split()[:3])
    try:
        md, b.rows = report(b.R, b.threads_ok, b.notes, elapsed)
    except Exception:
        import traceback
        traceback.print_exc()
        md = "# cerebras-proxy benchmark\n\nreport failed; see results.json\n"
        rc = rc or 1
    b.R["rows"] = b.rows
    b.R["notes"] = b.notes
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(b.R, f, indent=1, default=str)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    progress("wrote %s/results.md and results.json" % outdir)
    return rc


if __name__ == "__main__":
    sys.exit(main())
