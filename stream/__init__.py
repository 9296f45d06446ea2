"""authtrail: stream."""
