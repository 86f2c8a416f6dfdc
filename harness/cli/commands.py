"""The ``harness`` subcommands: one handler per command, ``args`` in, exit code out.

``HANDLERS`` maps each command of ``harness.cli.parser.build_parser`` to its handler. A
handler raises the expected mistakes (``harness.dispatch.failures.expected_types``) and
``harness.cli.main`` prints them as one line; the heavier modules are imported inside the
handlers, so a command loads only what it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from harness.bench.command import cmd_bench
from harness.bench.power.command import cmd_power
from harness.dispatch.sweep import run_sweep


def cmd_ls(args: argparse.Namespace) -> int:
    """``harness ls tasks|methods|datasets|protocols``: one name (tasks: a summary line) per line; 0."""
    from harness.catalog import DATASETS, METHODS, PROTOCOLS
    from harness.tasks import load_task, task_files

    if args.what == "tasks":
        for path in task_files():
            spec = load_task(path)
            print(f"{spec.name:22s} v{spec.version}  {spec.protocol:15s} {spec.dataset:10s} "
                  f"{spec.description.splitlines()[0] if spec.description else ''}")
    else:
        registry = {"methods": METHODS, "datasets": DATASETS, "protocols": PROTOCOLS}[args.what]
        if args.what == "methods":
            from harness.encoders.submission import register_plugins

            register_plugins()
        for name in registry.names():
            print(name)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """One line per task file: ``ok`` or ``ERROR  <file>: <key>: <what>``; exit 1 when any is invalid.

    ``load_task`` checks everything a run would refuse later (see ``harness.tasks``): the file,
    its keys and values, the datasets' labels, views and splits, and the protocol's arguments
    and metrics for every profile.
    """
    from harness.tasks import TaskSpecError, load_task, task_files

    files = [Path(f) for f in args.files] or task_files()
    bad = 0
    for path in files:
        try:
            load_task(path)
            print(f"ok     {path}")
        except TaskSpecError as exc:  # its message starts with the file
            bad += 1
            print(f"ERROR  {exc}")
    print(f"{len(files) - bad} valid, {bad} invalid")
    return 1 if bad else 0


def cmd_run(args: argparse.Namespace) -> int:
    """``harness run``: one run, in this process or as a submitit job; 0 when done, 1 when a job failed."""
    from harness.dispatch.runner import RunRequest, execute

    req = RunRequest(method=args.method, task=args.task, fraction=args.fraction, seed=args.seed,
                     profile=args.profile, data_root=args.data_root, results_dir=args.results,
                     overrides=args.overrides, save_predictions=args.save_predictions, device=args.device,
                     progress=not args.quiet, tasks_dir=args.tasks_dir, pretrain_on=args.pretrain_on)
    if args.executor != "debug":
        return _dispatched([req], args)
    out = execute(req)
    _print_outcome(out.record, out.path)
    return 0


def _dispatched(requests: list, args: argparse.Namespace) -> int:
    """Run ``requests`` as submitit jobs (``--executor local|slurm``), print their summary; 1 when one failed."""
    from harness.dispatch.outcomes import describe, dispatch_runs

    outcomes = dispatch_runs(requests, args)
    print(describe(outcomes))
    return 0 if all(o.status == "done" for o in outcomes) else 1


def _print_outcome(rec: dict, path: Path) -> None:
    main = rec["main_metric"]
    ci = rec["ci"].get(main)
    ci_txt = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
    value = rec["metrics"][main]
    shown = f"{value:.4f}" if value == value else "not measurable (the record's details say why)"  # NaN
    print(f"[{rec['data_source']}] {rec['method']} on {rec['task']} (fraction {rec['fraction']:g}, seed "
          f"{rec['seed']}): {main} = {shown}{ci_txt}")
    for reason, count in rec.get("skipped", {}).items():
        print(f"  skipped {count}: {reason}")
    for reason, count in rec.get("warnings", {}).items():
        print(f"  warning {count}: {reason}")
    print(f"record: {path}")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """``harness leaderboard``: the leaderboards of ``--results`` and the published tables; 1 without a record.

    The published figures (``--published``, default ``leaderboards/published.yaml``) are rendered under
    ``<out>/published/`` whether or not there are records; a file that does not validate is an error.
    """
    from harness.reporting.leaderboard import render_all
    from harness.reporting.published import render_published

    published = render_published(args.published, args.out) if args.published != "none" else []
    written, problems = render_all(args.results, args.out, reference=args.reference)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    for path in [*written, *published]:
        print(path)
    if not written:
        print(f"no result records under {args.results}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``harness export``: records and leaderboards as parquet (``harness.reporting.export``); 1 without records."""
    from harness.reporting.export import export

    written, problems = export(args.results, args.out)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not written:
        print(f"no result records under {args.results}", file=sys.stderr)
        return 1
    files = [p for p in written if p.suffix == ".parquet"]
    print(f"exported to {args.out}: {len(files)} parquet file(s) and {written[0].name} "
          f"(load with datasets.load_dataset(\"parquet\", data_files=...), see its README)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``harness compare``: the paired comparison of two leaderboard rows; 2 for an unknown row or metric."""
    from harness.reporting.compare import compare

    try:
        print(compare(args.results, args.task, args.a, args.b, args.metric, args.data_source), end="")
    except (KeyError, ValueError) as exc:
        print(f"harness: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """``harness data synth|check``: write the synthetic world, or check a dataset (2 on a problem or absence)."""
    if args.data_command == "synth":
        from harness.synth import DEFAULT_SCALE, write_world

        scale = DEFAULT_SCALE if args.scale is None else args.scale
        try:
            info = write_world(Path(args.out), sources=tuple(args.sources), scale=scale, seed=args.seed,
                               calibration=args.calibration, progress=not args.quiet, workers=args.workers)
        except ValueError as exc:  # unknown source, bad scale, unusable calibration: raised before writing
            print(f"harness: error: data synth: {exc}", file=sys.stderr)
            return 2
        print(f"synthetic world written to {args.out} (calibration {info['calibration']}): {info['counts']}")
        return 0
    from harness.catalog import DATASETS
    from harness.data.check import decode_images
    from harness.data.roots import resolve_data_root

    root = resolve_data_root(args.root, datasets=(args.dataset,))
    report = DATASETS.get(args.dataset).check(root.path)
    decode_images(report, workers=args.workers, progress=not args.quiet)
    print(report.render())
    return 0 if report.ok else 2  # 0 only when a run could use the data: present and no problem


def _preprocess_options(args: argparse.Namespace) -> dict:
    """The preprocessing overrides given on the command line (``harness.encoders.public.options``)."""
    given = {"image_size": args.image_size, "crop_size": args.crop_size, "channels": args.channels,
             "mean": args.mean, "std": args.std, "pixel_range": args.pixel_range, "resize_mode": args.resize_mode}
    return {k: (list(v) if isinstance(v, list | tuple) else v) for k, v in given.items() if v is not None}


def _print_check(name: str, method, tasks: list) -> None:
    """What ``submit --check`` shows: capabilities, preprocessing, fingerprint, what was read, the tasks."""
    from harness.encoders.public.preprocessing import describe

    fp = method.fingerprint()
    print(f"{name}: checks passed; capabilities {sorted(method.card.capabilities)}")
    print(f"  preprocessing: {describe(method.card.preprocess)}")
    print(f"  embedding fingerprint: {fp['sha256']} (image {fp['image']}"
          + (f", text {fp['text']}" if fp["text"] else "") + f"; {fp['batch']}; {fp['rounding']})")
    print(f"  weights sha256: {method.weights_sha256()}")
    if method.card.notes:
        print(f"  read: {method.card.notes}")
    print(f"  would score: {[t.name for t in tasks]}")


def _manifest_precheck(args: argparse.Namespace, requests: list) -> None:
    """Compute the manifest's overlap with every task before any job; refuse a leak unless --allow-overlap.

    ``prepare`` does the counting (and the refusal) for each task's first run; a manifest that
    matches no id of any task's data is refused here, as a manifest of the wrong ids.
    """
    from harness.dispatch import failures
    from harness.dispatch.runner import prepare
    from harness.encoders.errors import SubmissionError
    from harness.encoders.manifest import read_manifest

    manifest = read_manifest(args.pretraining_manifest)  # a missing or empty file: one line before any data
    matched, checked = 0, []
    for req in {r.task: r for r in reversed(requests)}.values():
        try:
            prepared = prepare(dataclasses.replace(req, progress=False))
        except Exception as exc:
            if not isinstance(exc, failures.expected_types()) or "pretraining-manifest" in str(exc):
                raise
            continue  # data this task needs is absent: its runs report that themselves
        matched += prepared.overlap["matched_ids"]
        checked.append(req.task)
    if checked and matched == 0:
        raise SubmissionError(f"--pretraining-manifest {args.pretraining_manifest}: none of its {manifest.n_ids} "
                              f"ids is an image, study or patient id of the data of {checked}: check the ids "
                              "(one per line, or a CSV column image_id / study_id / patient_id)")


def cmd_submit(args: argparse.Namespace) -> int:
    """Check the submission (name, pretraining data, encoder, capabilities) before any job, then score it.

    With ``--check`` it stops after the checks and prints what a run would use (``_print_check``).
    One failing run stops nothing: it is printed with its reason, gets a failure record
    (``harness.dispatch.failures``) and makes the exit code 1.
    """
    from harness.dispatch import failures
    from harness.dispatch.runner import RunRequest, execute, load_method
    from harness.encoders.errors import SubmissionError
    from harness.encoders.submission import (
        capable_tasks,
        check_name,
        check_text_model,
        ensure_registered,
        refuse_earlier_submission,
        register_plugins,
        submission_spec,
        text_model_tasks,
    )

    check_name(args.name)
    text_model = check_text_model(args.text_model) if args.text_model else None
    spec = submission_spec(args.spec, args.arch, args.weights, args.pretraining_data,
                           checkpoint_key=args.checkpoint_key, key_prefix=args.key_prefix,
                           preprocess=_preprocess_options(args), text_model=text_model)
    if args.allow_overlap and not args.pretraining_manifest:
        raise SubmissionError("--allow-overlap goes with --pretraining-manifest FILE (it allows what the manifest's "
                              "overlap would refuse)")
    register_plugins()  # installed plugins' names are taken, like the built-in methods'
    ensure_registered(args.name, spec)
    method = load_method(args.name)  # builds and checks the encoder
    caps = set(method.card.capabilities)
    tasks = capable_tasks(caps, args.tasks, args.tasks_dir)
    if text_model and not text_model_tasks(tasks):
        raise SubmissionError(f"--text-model is the text side of the image+indication task; none of "
                              f"{[t.name for t in tasks]} takes a text model (add --tasks mimic-mm-cls)")
    if args.check:
        _print_check(args.name, method, tasks)
        return 0
    refuse_earlier_submission(args.name, args.results, method)
    print(f"{args.name}: capabilities {sorted(caps)}; scoring on {[t.name for t in tasks]}")
    requests = [RunRequest(method=args.name, task=t.name, fraction=f, seed=s, profile=args.profile,
                           data_root=args.data_root, results_dir=args.results, save_predictions=args.save_predictions,
                           device=args.device, progress=not args.quiet, tasks_dir=args.tasks_dir, submission=spec,
                           pretraining_manifest=args.pretraining_manifest, allow_overlap=args.allow_overlap)
                for t in tasks for f in (args.fractions or t.fractions) for s in (args.seeds or t.seeds)]
    if args.pretraining_manifest:
        _manifest_precheck(args, requests)
    if args.executor != "debug":
        return _dispatched(requests, args)
    failed = []
    for req in requests:
        try:
            out = execute(req)
        except Exception as exc:  # noqa: BLE001 - one run failing, by a mistake or a bug, stops no other
            failure = failures.Failure.from_exception(exc)
            failed.append((req, failure, failures.write_failure(req, failure)))
            print(f"FAILED {req.task} (fraction {req.fraction:g}, seed {req.seed}): {failure.reason}", file=sys.stderr)
            continue
        failures.clear_failure(req)
        _print_outcome(out.record, out.path)
    print(f"{args.name}: {len(requests) - len(failed)} run(s) done, {len(failed)} failed")
    for req, failure, record in failed:
        print(f"FAILED {req.task} (fraction {req.fraction:g}, seed {req.seed}): " + "\n    ".join(
            [*failure.summary("the failure record").splitlines(), *([f"failure record: {record}"] if record else [])]))
        if record is None and failure.traceback:  # a bug whose record could not be written: keep its traceback
            print(failure.traceback, file=sys.stderr, end="")
    return 1 if failed else 0


def cmd_convert_weights(args: argparse.Namespace) -> int:
    """``harness convert-weights FILE --out OUT.safetensors``: the weights of any checkpoint, flat, code never run."""
    from harness.encoders.checkpoints import convert

    n, notes = convert(args.file, args.out, args.checkpoint_key, args.key_prefix)
    print(f"wrote {args.out}: {n} tensors" + (f" ({'; '.join(notes)})" if notes else ""))
    print(f"submit it with: python -m harness submit LIBRARY:NAME --weights {args.out} --name NAME")
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    """``harness regress``: records against published (or reference) numbers; 1 when one falls outside."""
    from harness.reporting.regress import run_regress

    if args.regenerate_reference:
        from harness.reporting.reference import regenerate

        print(f"wrote {regenerate()}")
        return 0
    code, text = run_regress(args.results, args.against, args.out, args.data_source, args.tolerance)
    print(text)
    return code


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "ls": cmd_ls, "validate": cmd_validate, "leaderboard": cmd_leaderboard, "compare": cmd_compare,
    "data": cmd_data, "export": cmd_export, "regress": cmd_regress, "submit": cmd_submit, "sweep": run_sweep,
    "bench": cmd_bench, "power": cmd_power, "convert-weights": cmd_convert_weights,
}
