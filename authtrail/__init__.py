"""authtrail: a tamper-evident audit pipeline for authentication events."""

__version__ = "0.1.0"
