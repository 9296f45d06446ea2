"""authtrail: tests unit."""
