#!/usr/bin/env python3
"""Runs the integration suite; prints unittest's report and, last, one line
"integration: N passed, N failed" for tests/run-all.sh to add up.
Usage: run.py [unittest names...]   (default: every test_*.py here)
TEST_DURATIONS=N also prints the N slowest modules and tests."""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class TimedResult(unittest.TextTestResult):
    """Also records when each test ended, for TEST_DURATIONS."""
    ends = []

    def stopTest(self, test):
        super().stopTest(test)
        self.ends.append((time.monotonic(), test.id()))


def durations(t0, ends, top):
    """The slowest test modules and tests: each one's time since the one
    before it ended (so a module's or class's set-up counts with its first
    test)."""
    per_test, per_module = [], {}
    prev = t0
    for t, name in ends:
        per_test.append((t - prev, name))
        mod = name.split(".")[0]
        per_module[mod] = per_module.get(mod, 0.0) + t - prev
        prev = t
    print("slowest modules: " + ", ".join(
        "%s %.1f s" % (m, d) for m, d in sorted(per_module.items(), key=lambda x: -x[1])[:top]))
    for d, name in sorted(per_test, reverse=True)[:top]:
        print("  %6.1f s  %s" % (d, name))


def main(argv):
    loader = unittest.TestLoader()
    if argv:
        suite = loader.loadTestsFromNames(argv)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout,
                                     resultclass=TimedResult).run(suite)
    top = int(os.environ.get("TEST_DURATIONS", "0") or 0)
    if top > 0:
        durations(t0, TimedResult.ends, top)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    # A failing setUpModule/tearDownModule (e.g. the harness' secrets check)
    # or setUpClass/tearDownClass is an error of its own, not one of the
    # tests run; a test with an error in its cleanup as well counts once.
    tests_failed = {id(t) for t, _ in result.failures + result.errors
                    if isinstance(t, unittest.TestCase)}
    tests_failed |= {id(t) for t in result.unexpectedSuccesses}
    passed = result.testsRun - len(tests_failed) - len(result.skipped)
    print("integration (%s): %d passed, %d failed, %d skipped"
          % (os.environ.get("RUN_LABEL", os.environ.get("PROXY_SERVER", "nginx")),
             passed, failed, len(result.skipped)))
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
