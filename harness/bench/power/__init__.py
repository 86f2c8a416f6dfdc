"""``python -m harness power``: the evidence that the benchmark can tell encoders apart (``docs/power.md``).

A tool beside the bench, off the run path: per task, the sizes its cohort and protocol measure on,
and for each listed method (default ``random``, ``pixels``, ``imagenet``) the main metric with the
95 % CI half-width of its record, the paired difference against ``random`` (the leaderboard's
paired bootstrap), the regeneration gain of an informative encoder over random features, and a
PASS / FAIL line for the CI target (``document.TARGET``: imagenet on mimic-cls at 100 % labels,
small profile, half-width of AUROC-macro <= 0.02)::

    python -m harness power --out docs/power.md                                  # the default world, small
    python -m harness power --methods random imagenet --tasks mimic-cls --profile smoke --out /tmp/p.md

Methods come from ``--methods`` (the registry; an unknown name is its one-line error before any
run), metrics from each task's ``main_metric``: nothing here names a method or metric except the
defaults and the target.

============  ================================================================
``command``   the options, ``run_power``, ``cmd_power``
``sizes``     ``task_sizes``: split images and patients, the protocol's units
``measure``   ``Cell``, ``Grid``: one runner run per (method, task); the pairing
``document``  the markdown, and ``check_target`` (the PASS / FAIL line)
============  ================================================================
"""
