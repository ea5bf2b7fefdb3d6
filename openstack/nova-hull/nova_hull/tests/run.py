"""Runs the driver's tests and ends with one line: `passed N skipped N failed N`."""

import sys
import unittest

MODULES = ["nova_hull.tests.test_driver", "nova_hull.tests.test_spawn"]


def main():
    suite = unittest.TestSuite()
    for name in sys.argv[1:] or MODULES:
        suite.addTests(unittest.TestLoader().loadTestsFromName(name))
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped - len(result.expectedFailures)
    print("passed %d skipped %d failed %d" % (passed, skipped, failed), flush=True)
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
