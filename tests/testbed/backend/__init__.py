"""Contract tests of the testbed backend."""
