"""Fault-injection suite: the real pipeline under seeded load, with processes killed,
restarted, frozen, cut off from ClickHouse and flooded with bad input.

``python -m tests.faults --iterations N --seed S --report docs/RELIABILITY.md`` runs every
scenario (``make faults``); ``tests/faults/test_faults_short.py`` runs a short seeded
version in CI. Modules: :mod:`~tests.faults.scenarios` (the faults),
:mod:`~tests.faults.harness` (broker, store and supervised processes),
:mod:`~tests.faults.load` (traffic with per-event acknowledgements),
:mod:`~tests.faults.tally` (lost / duplicated / forked), :mod:`~tests.faults.runner` and
:mod:`~tests.faults.report` (the table in docs/RELIABILITY.md).
"""
