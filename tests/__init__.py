"""authtrail: tests."""
