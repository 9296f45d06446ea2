"""Benchmarks of authtrail against a plain pipeline, on this machine (issue 6).

``python -m benchmarks`` runs every benchmark and writes ``benchmarks/results/``:
``results.json`` (every number, with machine, versions, parameters and date),
``summary.md`` (the tables of docs/PERFORMANCE.md) and PNG plots when matplotlib is
installed. ``--smoke`` runs a tiny configuration in well under a minute so CI keeps the
harness working; it asserts nothing about speed.

These are benchmarks, not timed tests: nothing here fails because a number is low.

Layout: :mod:`benchmarks.limits` (physical limits and per-component costs, each in a
fresh interpreter), :mod:`benchmarks.pipeline` (authtrail and the plain baseline end to
end on the local broker and chdb), :mod:`benchmarks.verify_bench` (``authtrail verify``
over a generated store), :mod:`benchmarks.report` (JSON, Markdown, plots).
"""
