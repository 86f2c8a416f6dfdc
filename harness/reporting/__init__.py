"""Reporting: what is made from result records (the last step of the data flow).

``leaderboard`` (markdown tables per task and data), ``cells`` (what one cell states: a mean and
its 95 % interval), ``pairing`` (paired-bootstrap differences between rows, from the predictions
every run keeps), ``pictures`` (label-efficiency curves), ``published`` (the published figures as
tables, "as reported, not reproduced"), ``compare`` (paired differences of two rows over shared
seeds), ``regress`` (records against published or reference numbers, for a lab's CI) and
``reference`` (the project's own reference suite on the synthetic world). Every one reads only the
result records and their predictions files (``harness.results``), or the published-figures file.
"""
