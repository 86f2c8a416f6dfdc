"""Benchmarks: how fast the harness is, as ratios measured side by side in one run.

A tool, not part of the core path: ``python -m harness bench [--quick] [--out FILE]``
(``suite``) writes ``docs/bench-report.md``. Nothing in the run path imports this package.
"""
