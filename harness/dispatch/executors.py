"""Dispatch runs with submitit: in-process (``debug``), local subprocesses (``local``) or Slurm.

submitit is the one dispatch path; the job callable (``harness.dispatch.jobs.RunJob``) is
the same everywhere, and submitting and waiting is ``harness.dispatch.outcomes``::

    python -m harness run --method random --task mock --executor debug      # in this process
    python -m harness run --method moco --task mock --executor local        # a subprocess
    python -m harness run --method moco --task mimic-cls --executor slurm \\
        --partition gpu --gpus-per-node 1 --time-min 240 --slurm-config cluster.yaml

This module is the executor options (``add_executor_arguments``, ``resolved_options``) and
the executor they make (``make_executor``, ``slurm_parameters``). Cluster names, accounts
and paths come from the command line or a ``--slurm-config`` YAML (same keys as the
options, underscores for dashes; the command line wins), never from this file.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
import yaml

from harness.storage import REPOSITORY

EXECUTORS = ("debug", "local", "slurm")
# --slurm-config keys -> type (the same names as the options, with underscores)
SLURM_KEYS: dict[str, type] = {
    "partition": str, "account": str, "qos": str, "constraint": str, "gpus_per_node": int,
    "cpus_per_task": int, "mem_gb": float, "time_min": int, "tasks_per_node": int, "slurm_extra": dict,
    "array_parallelism": int,
}
DEFAULT_TIME_MIN = 24 * 60  # submitit's own defaults (2 min local, 5 min Slurm) would kill real runs


class DispatchError(ValueError):
    """Bad executor options (e.g. a --slurm-config key); the message names the option or file."""


# ---------------------------------------------------------------------------------------------- options

def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The executor options shared by ``harness run`` and ``harness sweep``."""
    g = parser.add_argument_group("dispatch (submitit)")
    g.add_argument("--executor", choices=EXECUTORS, default="debug",
                   help="debug: in this process (tests, debugging); local: subprocesses on this machine; "
                        "slurm: sbatch jobs / job arrays")
    g.add_argument("--logs", default=None, metavar="DIR",
                   help="submitit folder: one sub-folder per job with its stdout/stderr and pickles "
                        "(default: <results>/logs)")
    g.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                   help="at most N jobs at once (Slurm: the array's %%N; local: N subprocesses, default 1 "
                        "since each trains with every core)")
    g.add_argument("--tasks-per-node", type=int, default=None, metavar="N",
                   help="N processes per pretraining job under torch.distributed (one per GPU)")
    s = parser.add_argument_group("slurm (with --executor slurm; any also in --slurm-config)")
    s.add_argument("--slurm-config", metavar="FILE",
                   help="YAML with any of: " + ", ".join(SLURM_KEYS) + " (the command line wins)")
    s.add_argument("--partition")
    s.add_argument("--account")
    s.add_argument("--qos")
    s.add_argument("--constraint", help="sbatch --constraint (node features, e.g. a GPU type)")
    s.add_argument("--gpus-per-node", type=int)
    s.add_argument("--cpus-per-task", type=int)
    s.add_argument("--mem-gb", type=float)
    s.add_argument("--time-min", type=int,
                   help=f"wall-clock limit per job (default {DEFAULT_TIME_MIN}); a timeout requeues the job, "
                        "which resumes from its checkpoints")
    s.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch parameter, e.g. --slurm-extra reservation=ml (repeatable)")


def _parse_extra(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DispatchError(f"--slurm-extra expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value
    return out


def resolved_options(args: argparse.Namespace) -> dict[str, Any]:
    """The executor options: ``--slurm-config`` values overridden by the command line.

    Raises:
        DispatchError: an unreadable config, an unknown key or a value of the wrong type.
    """
    opts: dict[str, Any] = {}
    if getattr(args, "slurm_config", None):
        path = Path(args.slurm_config)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DispatchError(f"--slurm-config {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise DispatchError(f"--slurm-config {path}: expected a mapping of {list(SLURM_KEYS)}")
        for key, value in raw.items():
            key = str(key).replace("-", "_")
            if key not in SLURM_KEYS:
                from harness.registry import did_you_mean

                raise DispatchError(f"--slurm-config {path}: unknown key {key!r}{did_you_mean(key, list(SLURM_KEYS))}")
            kind = SLURM_KEYS[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise DispatchError(f"--slurm-config {path}: {key}: expected {kind.__name__}, got {value!r}")
            opts[key] = {str(k): str(v) for k, v in value.items()} if kind is dict else value
    for key in SLURM_KEYS:
        value = getattr(args, key, None)
        if key == "slurm_extra":
            opts["slurm_extra"] = {**opts.get("slurm_extra", {}), **_parse_extra(value or [])}
        elif value is not None:
            opts[key] = value
    return opts


# ---------------------------------------------------------------------------------------------- executors

def _pythonpath_setup() -> list[str]:
    """Jobs unpickle ``harness.dispatch.jobs.RunJob``: put this checkout on their path (installed or not)."""
    root = REPOSITORY
    return [f'export PYTHONPATH="{root}${{PYTHONPATH:+:$PYTHONPATH}}"']


def make_executor(args: argparse.Namespace, *, tasks_per_node: int | None = None,
                  dependency: str | None = None) -> submitit.Executor:
    """A submitit executor for ``args.executor`` with the resolved options.

    Args:
        args: parsed arguments from ``add_executor_arguments``.
        tasks_per_node: override (the sweep asks for 1 on evaluation jobs).
        dependency: a Slurm dependency such as ``afterok:123_0`` (ignored by other executors).
    """
    opts = resolved_options(args)
    logs = args.logs or Path(getattr(args, "results", None) or "results") / "logs"
    folder = Path(logs) / "%j"
    ntasks = tasks_per_node or opts.get("tasks_per_node") or 1
    if args.executor == "debug":
        if ntasks > 1:
            raise DispatchError("--tasks-per-node > 1 needs --executor local or slurm (debug is one process)")
        return submitit.DebugExecutor(folder=folder)
    if args.executor == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.get("time_min", DEFAULT_TIME_MIN), tasks_per_node=ntasks,
                                   gpus_per_node=opts.get("gpus_per_node", 0), setup=_pythonpath_setup())
        return executor
    if args.executor != "slurm":
        raise DispatchError(f"unknown executor {args.executor!r}; choose from {EXECUTORS}")
    if shutil.which("srun") is None:  # submitit's SlurmExecutor needs it; say so in one line
        raise DispatchError("--executor slurm: no `srun` on PATH, so this machine cannot submit Slurm jobs "
                            "(run on a Slurm login node, or use --executor local)")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=3)
    executor.update_parameters(**slurm_parameters(opts, ntasks, dependency))
    return executor


def slurm_parameters(opts: dict[str, Any], tasks_per_node: int, dependency: str | None = None) -> dict[str, Any]:
    """submitit's Slurm parameters (``AutoExecutor.update_parameters``) for the resolved options.

    Every option becomes one ``#SBATCH`` line of the job script (the ``slurm`` tests read the
    script submitit writes); the rest go through ``slurm_additional_parameters``.
    """
    extra = dict(opts.get("slurm_extra", {}))
    if dependency:
        extra["dependency"] = dependency
    params: dict[str, Any] = {
        "name": "harness", "timeout_min": opts.get("time_min", DEFAULT_TIME_MIN), "nodes": 1,
        "tasks_per_node": tasks_per_node, "slurm_setup": _pythonpath_setup(),
        "slurm_additional_parameters": extra,
    }
    for key, target in (("gpus_per_node", "gpus_per_node"), ("cpus_per_task", "cpus_per_task"),
                        ("mem_gb", "mem_gb"), ("partition", "slurm_partition"), ("account", "slurm_account"),
                        ("qos", "slurm_qos"), ("constraint", "slurm_constraint"),
                        ("array_parallelism", "slurm_array_parallelism")):
        if opts.get(key) is not None:
            params[target] = opts[key]
    return params
