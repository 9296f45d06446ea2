"""authtrail: tests integration."""
