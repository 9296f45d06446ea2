"""The top floor: the ``authtrail`` command and its subcommands (:mod:`authtrail.cli.main`).

Imports every other package; nothing imports it. The ground floor every package imports
(:mod:`authtrail.errors`, :mod:`authtrail.settings`, :mod:`authtrail.topics`) stays at the
top of :mod:`authtrail`.
"""
