"""authtrail: sinks."""
