#!/usr/bin/env python3
"""Runs the Redis script tests (test_*.py here: shared/lua/*.lua on a real
redis-server, no C code); prints unittest's report and, last, one line
"integration (redis scripts): N passed, N failed, N skipped[, N known
script bugs]" (tests marked @script_bug in test_scripts.py: expected
failures, listed above that line, neither passed nor failed).
Exits non-zero if anything failed or nothing passed.
Usage: run.py [unittest names...]   (default: every test_*.py here)"""

import os
import signal
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv):
    # SIGTERM unwinds like ^C (unittest lets KeyboardInterrupt through), so
    # the redis-servers are stopped by the harness' atexit handler.
    signal.signal(signal.SIGTERM, _interrupt)
    loader = unittest.TestLoader()
    if argv:
        suite = loader.loadTestsFromNames(argv)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    try:
        result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    except KeyboardInterrupt:
        print("interrupted")
        print("integration (redis scripts): 0 passed, 1 failed, 0 skipped")
        return 1
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    known = len(result.expectedFailures)
    passed = result.testsRun - failed - skipped - known
    if known:
        # test_scripts.script_bug: what a script's header promises and the
        # script does not do yet
        print("known script bugs (expected failures, not counted as passed):")
        for test, _ in result.expectedFailures:
            print("  %s: %s" % (test.id(), (test.shortDescription() or "").split(" -- ")[0]))
    if result.unexpectedSuccesses:
        print("unexpected successes (a script bug fixed? drop its @script_bug mark):")
        for test in result.unexpectedSuccesses:
            print("  %s" % test.id())
    print("integration (redis scripts): %d passed, %d failed, %d skipped%s"
          % (passed, failed, skipped,
             ", %d known script bugs" % known if known else ""))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
