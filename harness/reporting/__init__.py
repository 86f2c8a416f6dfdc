"""Reporting: what is made from result records (the last step of the data flow).

``leaderboard`` (markdown tables per task and data), ``pictures`` (label-efficiency curves),
``compare`` (paired differences of two rows over shared seeds), ``regress`` (records against
published or reference numbers, for a lab's CI) and ``reference`` (the project's own reference
suite on the synthetic world). Every one reads only the result records (``harness.results``).
"""
