"""authtrail: producers."""
