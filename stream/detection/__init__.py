"""Brute-force detection: lockout and password-spraying detectors, their policies and the
decisions they emit. Pure: events in, decisions out (docs/LOCKOUT.md)."""
