"""Task specs: small YAML files validated into a frozen dataclass.

Unknown keys, missing keys and wrong types are errors naming the file and the
key. Every cohort choice is visible in the file; ``version`` is bumped on any
change that moves numbers.

``load_task`` refuses everything a run would refuse later, so ``harness validate``,
``run``, ``sweep`` and ``submit`` (all of which load tasks through it) stop before any
work with one line ``<file>: <key>: <what>``:

- the file itself: unreadable, not UTF-8, not YAML, empty, a key repeated in a mapping
  (YAML would silently keep the last);
- the keys and their types; repeated entries in ``labels``, ``metrics``, ``views``,
  ``fractions``, ``seeds`` and ``requires``; fractions in (0, 1], seeds >= 0, the
  split's fractions, profile names in ``profile_args``;
- against the datasets (their adapters' ``label_names``, ``views`` and official
  ``splits``): labels, views, ``split.method`` and ``split.test_split``, for the
  ``eval_dataset`` too;
- against the protocol's declaration (``harness.protocols.args``): ``protocol_args``
  and every profile's overrides (names, types, ranges), the metrics and main metric
  it produces with them, the capabilities it needs in ``requires``, a fraction of 1
  for zero-shot protocols.

===========  =======================================================================
``spec``     ``TaskSpec``, ``LabelPolicy``, ``SplitSpec``, ``TaskSpecError``
``loading``  the file read strictly into a spec; ``load_task``, ``get_task``, ``task_files``
``checks``   ``check_task``: the values, the datasets and the protocol (the last three items above)
===========  =======================================================================

The names below are the package's face: callers import them from ``harness.tasks``.
"""

from harness.tasks.loading import TASKS_DIR, get_task, load_task, task_files
from harness.tasks.spec import LabelPolicy, SplitSpec, TaskSpec, TaskSpecError

__all__ = ["TASKS_DIR", "LabelPolicy", "SplitSpec", "TaskSpec", "TaskSpecError", "get_task", "load_task",
           "task_files"]
