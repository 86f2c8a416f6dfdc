"""Failed runs: what went wrong in one line, recorded next to the results without ever being one.

When one run of a ``submit``, a ``sweep`` or a dispatched ``run`` fails, the others go on,
the summary prints the reason, and a small JSON failure record is written to::

    <results>/failed/<task>/<method>__f<fraction>__s<seed>__<variant>.json

(``variant``: a short hash of what else tells two runs of a cell apart: profile, ``--set``,
``--pretrain-on``, data root and tasks folder.)

``harness.results.load_records`` skips ``<results>/failed/`` (``FAILURES_DIR``), so the
leaderboard, ``regress``, ``compare`` and the sweep's skip-existing never take a failure
for a result. A later success of the same cell removes its failure record
(``clear_failure``): the folder holds what is failing now, not the history.

A record holds: ``status`` ("failed"), ``method``, ``task``, ``fraction``, ``seed`` (null
for a cell refused before its fractions and seeds were expanded, e.g. an unknown method),
``profile``, ``overrides``, ``pretrain_on``, ``stage`` (``run``, ``pretrain`` or
``plan``), ``reason`` (one line),
``error_type``, ``expected``, ``job_id`` and ``log`` (the job's stderr file, when there is
one), ``failed_at`` and ``harness_version``; and ``traceback`` only when the error was not
an expected mistake (``EXPECTED``: a bug, whose traceback is what a report needs).

An expected mistake (a bad name, task file, data file, weights file, missing capability,
protocol refusal, unwritable results) is its message alone. Anything else is an
unexpected error: its type and message, and the traceback in the record.

Records and their folder are shared outputs, so no data identifier may reach them (the
printed summary, about the user's own files, keeps the full message). Before writing,
``redact`` replaces every token with 5 or more digits (MIMIC subject/study/DICOM ids,
NIH image and patient ids, CheXpert ``patientNNNNN``, OpenI image ids) and every quoted
string longer than 40 characters (report text) with ``…``, and so is the value after a word
naming an identifier (``patient 123``, ``subject_id '10000032'``, ``study: s5``).
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FAILURES_DIR = "failed"
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_TOKEN = re.compile(r"[A-Za-z0-9-]+")
# the value after a word that says it is an identifier: "patient 123", "subject_id '10000032'", "study: s5"
_NAMED_ID = re.compile(r"(?i)(\b(?:patient|subject|study|dicom|image)(?:[ _]?ids?)?\b[\s:=#]*)"
                       r"(['\"]?[\w.-]*\d[\w.-]*['\"]?)")
_SAFE = re.compile(r"[^A-Za-z0-9.+_-]")


def expected_types() -> tuple[type[BaseException], ...]:
    """The exception types of expected mistakes (the CLI's one-line errors, and protocol refusals)."""
    from harness.data.schema import DataError
    from harness.dispatch.executors import DispatchError
    from harness.dispatch.runner import RunError
    from harness.encoders.errors import SubmissionError
    from harness.features import EncoderChangedError
    from harness.protocols.errors import ProtocolError
    from harness.registry import UnknownNameError
    from harness.reporting.regress import RegressError
    from harness.tasks import TaskSpecError

    return (UnknownNameError, TaskSpecError, DataError, OSError, RegressError, SubmissionError, RunError,
            DispatchError, ProtocolError, EncoderChangedError)


def _resolve(qualified: str) -> type | None:
    """The exception class a worker's traceback names (builtins and harness modules only), or None."""
    import builtins
    import importlib

    module, _, name = qualified.rpartition(".")
    try:
        owner = importlib.import_module(module) if module.startswith("harness") else builtins if not module else None
    except ImportError:
        return None
    found = getattr(owner, name, None) if owner is not None else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass
class Failure:
    """Why one run failed: ``reason`` (one line), the error's type, whether it was expected, and,
    only when it was not, the traceback."""

    reason: str
    error_type: str
    expected: bool
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> Failure:
        """The failure of a run that raised ``exc``."""
        message = one_line(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        if isinstance(exc, expected_types()):
            return cls(message, type(exc).__name__, True)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(f"{type(exc).__name__}: {message}", type(exc).__name__, False, text)

    @classmethod
    def from_job_text(cls, text: str) -> Failure:
        """The failure of a job known only by submitit's error text (the worker's traceback, or why it has none).

        Used when the worker left no failure of its own (``harness.dispatch.jobs``): a job killed
        by Slurm (time limit, memory) or one that died before the harness ran.
        """
        lines = [line.rstrip() for line in str(text).splitlines()]
        start = next((i for i, line in enumerate(lines) if line.strip() == "Traceback (most recent call last):"), None)
        if start is None:
            first = next((line for line in lines if line.strip()), "the job failed without a message")
            return cls(f"the job ended without a result: {one_line(first)}", "UncompletedJobError", True)
        trace = lines[start:]
        end = next((i for i, line in enumerate(trace) if line.startswith("-----")), len(trace))
        trace = trace[:end]  # submitit frames the worker's traceback with dashed lines
        last = next((line for line in reversed(trace) if line and not line.startswith(" ")), "")
        qualified, _, message = last.partition(": ")
        name = qualified.rsplit(".", 1)[-1] or "Exception"
        kind = _resolve(qualified)
        if kind is not None and issubclass(kind, expected_types()):
            return cls(one_line(message), name, True)
        return cls(one_line(f"{name}: {message}"), name, False, "\n".join(trace).strip() + "\n")

    def summary(self, traceback_in: str = "the log and the failure record") -> str:
        """The text for a run summary: the reason; for an unexpected error, where its traceback is."""
        if self.expected:
            return self.reason
        return f"{self.reason}\n(an unexpected error, probably a bug: its traceback is in {traceback_in})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(**{k: data[k] for k in ("reason", "error_type", "expected", "traceback")
                      if k in data})


def redact(text: str) -> str:
    """``text`` without data identifiers or report text (see the module docstring)."""
    text = _QUOTED.sub(lambda m: "'…'" if len(m.group()) > 42 else m.group(), text)
    text = _NAMED_ID.sub(lambda m: m.group(1) + "…", text)
    return _TOKEN.sub(lambda m: "…" if sum(c.isdigit() for c in m.group()) >= 5 else m.group(), text)


def _part(value: Any) -> str:
    """A file-name part: characters outside letters, digits and ``.+_-`` become ``_``; never hidden."""
    return _SAFE.sub("_", str(value)).lstrip(".") or "_"


def _variant(request: Any) -> str:
    """What else makes a run of the same cell another run: profile, ``--set``, ``--pretrain-on``, data, tasks."""
    from harness.config import config_hash

    return config_hash({"profile": request.profile, "overrides": list(request.overrides or []),
                        "pretrain_on": request.pretrain_on, "data_root": request.data_root,
                        "tasks_dir": request.tasks_dir})[:8]


def failure_path(request: Any, expanded: bool = True) -> Path:
    """Where the failure record of ``request``'s cell lives (``expanded=False``: the record standing for every
    fraction and seed of a (method, task) refused before they were expanded)."""
    fraction = "all" if not expanded else f"{request.fraction:g}".replace(".", "p")
    seed = "all" if not expanded else request.seed
    return Path(request.results_dir) / FAILURES_DIR / _part(request.task) / \
        f"{_part(request.method)}__f{fraction}__s{seed}__{_variant(request)}.json"


def write_failure(request: Any, failure: Failure, *, stage: str = "run", job_id: str = "",
                  log: str | Path | None = None, expanded: bool = True) -> Path | None:
    """Write the failure record of ``request`` atomically (see the module docstring for its fields).

    Args:
        request: the ``harness.dispatch.runner.RunRequest`` that failed (its ``results_dir`` holds the record).
        failure: why; its reason and traceback are redacted (``redact``) before writing.
        stage: ``run``, ``pretrain`` (its pretraining job failed) or ``plan`` (refused while planning).
        job_id: the submitit job, when there was one.
        log: the job's stderr file, when there is one.
        expanded: False for a cell refused before its fractions and seeds were known (stored as null).

    Returns:
        The record's path, or None (after a warning) when the results directory cannot be written:
        the summary still says why the run failed.
    """
    import logging

    import harness
    from harness.results import ResultsError, write_file

    path = failure_path(request, expanded)
    rec = {"status": "failed", "method": request.method, "task": request.task,
           "fraction": request.fraction if expanded else None, "seed": request.seed if expanded else None,
           "profile": request.profile, "overrides": list(request.overrides or []), "pretrain_on": request.pretrain_on,
           "stage": stage, "reason": redact(failure.reason), "error_type": failure.error_type,
           "expected": failure.expected, "job_id": str(job_id or ""), "log": str(log) if log else None,
           "failed_at": datetime.now(UTC).isoformat(timespec="seconds"), "harness_version": harness.__version__}
    if not failure.expected and failure.traceback:
        rec["traceback"] = redact(failure.traceback)
    data = json.dumps(rec, indent=2, sort_keys=True).encode()
    try:
        write_file(path, data)
    except ResultsError as exc:
        logging.getLogger("harness").warning("failure record not written: %s", exc)
        return None
    return path


def clear_failure(request: Any, expanded: bool = True) -> None:
    """Remove the failure record of ``request``'s cell, if any: it has just succeeded (``expanded=False``:
    the record of the whole (method, task), refused before expansion, which now plans)."""
    try:
        failure_path(request, expanded).unlink(missing_ok=True)
    except OSError:  # a read-only results directory: the stale record stays, nothing else breaks
        pass


def load_failures(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every failure record under ``results_dir`` (unreadable ones are left out)."""
    out = []
    for path in sorted((Path(results_dir) / FAILURES_DIR).rglob("*.json")):
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return out
