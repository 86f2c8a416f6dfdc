"""``python -m harness bench``: how fast the harness is, as ratios measured side by side in one run.

A tool, not part of the core path: nothing in ``harness/`` outside this package imports it
except the command line (``harness.cli``), which adds the command.

Every figure compares the harness with the naive way of doing the same work, on the
same machine, in the same process, with the same model, batch size and torch threads,
so the ratios mean something even on a busy shared machine (the load average is
written into the report)::

    python -m harness bench --quick --out /tmp/bench.md    # about a minute: tiny sizes, for tests
    python -m harness bench --out docs/bench-report.md      # the full report (tens of minutes on 2 cores)

==========  ===================================================================  ===============
figure      what is compared                                                     target
==========  ===================================================================  ===============
P1          ``features.extract_features`` (cold cache) vs a bare ``encode_image``  >= 0.95x
            loop over the same already-preprocessed tensors                       images/s
P2          harness linear probe (extract once, L-BFGS on cached features) vs a   >= 20x faster,
            naive frozen-backbone probe that re-encodes every epoch (Adam)        AUROC +-0.005
P3          reading the uint8 memmap image cache vs decoding + resizing the       >= 10x
            JPEG/PNG files every epoch                                            images/s
P4          ``mimic-cxr`` records of a MIMIC-sized layout (377,110 images,        <= 30 s,
            227,835 studies; CSVs only, ``check_files=False``), in a child        <= 2 GB peak RSS
P5          the synthetic suite (every method x every task, one seed) through     where the time
            the runner: wall time split by the records' ``timings``               goes
scaling     extraction, probe and retrieval at 1x, 4x, 16x a base size: time,     (no target)
            peak RSS
==========  ===================================================================  ===============

Benchmarks are measurements, not tests: nothing here asserts a speed. Each timed
pair takes the best of ``repeats`` alternating runs (the least disturbed by other
processes). ``--quick`` shrinks every size (the report says by how much) so the
command can be exercised by the test suite in seconds; ``--suite-methods`` /
``--suite-tasks`` restrict P5's grid (the report names the grid it ran).

===============  ==============================================================
``command``      the options, ``run_bench`` (every figure, then the report), ``cmd_bench``
``profiles``     ``BenchProfile``: the sizes of ``quick`` and ``full``; the targets
``fixtures``     planted-texture images, image files, MIMIC-sized tables, the encoder
``measure``      best-of timing, alternating pairs, peak RSS, the machine
``report``       a figure's summary row, the report, its markdown
``extraction``   P1
``probe``        P2 (and ``naive_probe``, the baseline it is measured against)
``image_cache``  P3
``records``      P4
``suite``        P5
``scaling``      scaling
``power/``       ``python -m harness power``: the evidence document ``docs/power.md`` (its own docstring)
===============  ==============================================================
"""
