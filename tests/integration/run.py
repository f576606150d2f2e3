#!/usr/bin/env python3
"""Runs the integration suite; prints unittest's report and, last, one line
"integration: N passed, N failed" for tests/run-all.sh to add up.
Usage: run.py [unittest names...]   (default: every test_*.py here)"""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main(argv):
    loader = unittest.TestLoader()
    if argv:
        suite = loader.loadTestsFromNames(argv)
    else:
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
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
