"""Command line: ``python -m harness <command>`` (or the ``harness`` console script).

Expected mistakes (unknown names, bad task files, missing data) print one clear
line and exit 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path

from harness import __version__
from harness.dispatch import executors

log = logging.getLogger("harness")

EPILOG = textwrap.dedent("""\
    examples:
      python -m harness run --method moco --task mimic-cls
      python -m harness run --method random --task mock --profile smoke --results /tmp/r
      python -m harness ls tasks
      python -m harness leaderboard --results results --out leaderboards
      python -m harness data synth --out /tmp/world --scale 0.2
      python -m harness validate
    """)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _sub(subparsers, name: str, help_: str, examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, help=help_, description=help_, formatter_class=_formatter,
                                 epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples).strip(), "  "))


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", required=True, help="method name (see `harness ls methods`)")
    p.add_argument("--task", required=True, help="task name (see `harness ls tasks`)")
    p.add_argument("--fraction", type=float, default=1.0, help="label fraction of the training split (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (fraction subset, probe init, bootstrap)")
    p.add_argument("--profile", choices=("smoke", "small", "paper"), default=None,
                   help="default: small on synthetic data, paper on real data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method config key (dotted, YAML value); repeatable")
    from harness.dispatch.runner import add_pretrain_on_argument

    add_pretrain_on_argument(p)
    _add_common(p)
    p.add_argument("--save-predictions", action="store_true",
                   help="write per-sample scores/targets (no text, no identifiers) next to the record")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="folder with the datasets in their original layouts (env HARNESS_DATA_ROOT); "
                        "default: the embedded synthetic world")
    p.add_argument("--results", default="results", help="results directory (default: results/)")
    p.add_argument("--tasks-dir", default=None, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", formatter_class=_formatter, epilog=EPILOG,
                                     description="Benchmark and leaderboard harness for chest X-ray "
                                                 "representation learning.")
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = _sub(sub, "run", "pretrain (or reuse) a method's encoder and score it on one task", """
        python -m harness run --method moco --task mimic-cls
        python -m harness run --method random --task nih14-cls --fraction 0.1 --seed 1 --profile smoke
        python -m harness run --method msn-ehr --task mimic-cls --set ehr.groups=[demographics]
        python -m harness run --method moco --task mimic-cls --executor slurm --partition gpu --gpus-per-node 1
    """)
    add_run_arguments(p)
    executors.add_executor_arguments(p)

    p = _sub(sub, "ls", "list tasks, methods, datasets or protocols", """
        python -m harness ls tasks
        python -m harness ls methods
    """)
    p.add_argument("what", choices=("tasks", "methods", "datasets", "protocols"))

    p = _sub(sub, "validate", "check every task file (or the ones named)", """
        python -m harness validate
        python -m harness validate tasks/mimic-cls.yaml
    """)
    p.add_argument("files", nargs="*", help="task YAML files (default: tasks/*.yaml)")

    p = _sub(sub, "leaderboard", "render markdown leaderboards from result records", """
        python -m harness leaderboard
        python -m harness leaderboard --results results --out leaderboards
    """)
    p.add_argument("--results", default="results")
    p.add_argument("--out", default="leaderboards")

    p = _sub(sub, "compare", "paired comparison of two leaderboard rows over the seeds they share", """
        python -m harness compare --task mimic-cls moco random
        python -m harness compare --task nih14-cls "msn-ehr (pretrained on mimic-cxr)" "msn (pretrained on mimic-cxr)"
    """)
    p.add_argument("a", help="row name as on the leaderboard")
    p.add_argument("b", help="the row it is compared with (difference a - b)")
    p.add_argument("--task", required=True)
    p.add_argument("--metric", default=None, help="default: the task's main metric")
    p.add_argument("--results", default="results")
    p.add_argument("--data-source", default=None, help="synthetic | real (needed when the results hold both)")

    p = _sub(sub, "data", "generate the synthetic world or check a dataset layout", """
        python -m harness data synth --out /tmp/world --scale 0.5 --seed 0
        python -m harness data synth --out /tmp/world-xrv --calibration torchxrayvision
        python -m harness data check nih14 --root /data
    """)
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    ps = dsub.add_parser("synth", help="write the synthetic CXR world in the real layouts")
    ps.add_argument("--out", required=True)
    ps.add_argument("--sources", nargs="+", default=["mimic", "chexpert", "nih14", "openi"])
    ps.add_argument("--scale", type=float, default=1.0)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--calibration", choices=("spec", "torchxrayvision"), default="spec",
                    help="finding prevalences: spec (published counts, the default whatever is installed) or "
                         "torchxrayvision (the metadata bundled with a locally installed torchxrayvision)")
    pc = dsub.add_parser("check", help="validate a dataset layout and decode every image: counts, skips, "
                                       "warnings and every problem found (exit 2 on a problem or an absent dataset)")
    pc.add_argument("dataset")
    pc.add_argument("--root", default=None, help="data root (default: HARNESS_DATA_ROOT or the synthetic world)")
    pc.add_argument("--workers", type=int, default=None, metavar="N",
                    help="image decoding processes (default: one per core, at most 8, from 2,000 images)")

    p = _sub(sub, "submit", "score your own encoder on every task it is capable of, like the baselines", """
        python -m harness submit examples.my_encoder:build --name my-enc --tasks mock --profile smoke
        python -m harness submit --arch resnet50 --weights my_weights.safetensors --name my-r50
        python -m harness submit my_pkg.encoders:build --name my-enc --fractions 0.1 1 --seeds 0
    """)
    p.add_argument("spec", nargs="?", default=None, help="package.module:factory returning the encoder")
    p.add_argument("--name", required=True, help="the name it gets on the leaderboard: letters, digits, . _ + -; "
                                                  "not a built-in method's, nor an earlier different submission's")
    p.add_argument("--arch", default=None, help="with --weights: resnet18 | resnet50 | vit_tiny | efficientnet_lite0 "
                                                "| timm:NAME | torchvision:NAME")
    p.add_argument("--weights", default=None, help=".safetensors (or a plain torch state dict; pickles are refused)")
    p.add_argument("--pretraining-data", nargs="+", default=None, metavar="DATASET:SPLIT",
                   help="with --weights: what the weights saw, for the leakage flag: a harness dataset or "
                        "imagenet, imagenet-21k, laion, ... (harness.encoders.provenance), split train|val|test|all "
                        "(e.g. mimic-cxr:train imagenet:train); default: unknown")
    p.add_argument("--tasks", nargs="+", default=None, help="default: every task it is capable of (not mock)")
    p.add_argument("--fractions", nargs="+", type=float, default=None, help="default: each task's own list")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: each task's own list")
    p.add_argument("--profile", choices=("smoke", "small", "paper"), default=None)
    p.add_argument("--save-predictions", action="store_true")
    p.add_argument("--device", default="auto")
    _add_common(p)
    executors.add_executor_arguments(p)

    p = _sub(sub, "regress", "compare result records with published numbers; exit 1 when one falls outside", """
        python -m harness regress --against published
        python -m harness regress --results results --against leaderboards/reference/reference.yaml
        python -m harness regress --regenerate-reference
    """)
    p.add_argument("--results", default="results")
    p.add_argument("--against", default="published", help="'published' (leaderboards/published.yaml) or a YAML file")
    p.add_argument("--data-source", choices=("real", "synthetic"), default=None,
                   help="default: the file's own (published figures are real-data figures)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="override every entry's tolerance, on the metric's scale (0.01 = 1 AUROC point)")
    p.add_argument("--out", default=None, help="also write the table as markdown here")
    p.add_argument("--regenerate-reference", action="store_true",
                   help="rerun the CI reference suite and rewrite leaderboards/reference/ (on purpose only)")

    _add_sweep(sub)
    _add_bench(sub)
    return parser


def _add_sweep(sub) -> None:
    from harness.dispatch import sweep

    p = _sub(sub, "sweep", "run a grid of methods x tasks x fractions x seeds as job arrays", """
        python -m harness sweep --methods random moco --tasks mimic-cls nih14-cls --fractions 0.1 1 --seeds 0 1 2
        python -m harness sweep --methods random --tasks mock --profile smoke --executor local
    """)
    sweep.add_sweep_arguments(p)
    executors.add_executor_arguments(p)


def _add_bench(sub) -> None:
    from harness.bench import command as bench

    p = _sub(sub, "bench", "measure the harness against naive baselines (ratios, one run, one machine)", """
        python -m harness bench --quick --out /tmp/bench.md
        python -m harness bench --out docs/bench-report.md
    """)
    bench.add_bench_arguments(p)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def cmd_ls(args: argparse.Namespace) -> int:
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
    from harness.dispatch.runner import RunRequest, execute

    req = RunRequest(method=args.method, task=args.task, fraction=args.fraction, seed=args.seed,
                     profile=args.profile, data_root=args.data_root, results_dir=args.results,
                     overrides=args.overrides, save_predictions=args.save_predictions, device=args.device,
                     progress=not args.quiet, tasks_dir=args.tasks_dir, pretrain_on=args.pretrain_on)
    if getattr(args, "executor", "debug") != "debug":
        from harness.dispatch.outcomes import describe, dispatch_runs

        outcomes = dispatch_runs([req], args)
        print(describe(outcomes))
        return 0 if all(o.status == "done" for o in outcomes) else 1
    out = execute(req)
    _print_outcome(out.record, out.path)
    return 0


def _print_outcome(rec: dict, path: Path) -> None:
    main = rec["main_metric"]
    ci = rec["ci"].get(main)
    ci_txt = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
    print(f"[{rec['data_source']}] {rec['method']} on {rec['task']} (fraction {rec['fraction']:g}, seed "
          f"{rec['seed']}): {main} = {rec['metrics'][main]:.4f}{ci_txt}")
    for reason, count in rec.get("skipped", {}).items():
        print(f"  skipped {count}: {reason}")
    for reason, count in rec.get("warnings", {}).items():
        print(f"  warning {count}: {reason}")
    print(f"record: {path}")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.reporting.leaderboard import render_all

    written, problems = render_all(args.results, args.out)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    for path in written:
        print(path)
    if not written:
        print(f"no result records under {args.results}", file=sys.stderr)
        return 1
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.reporting.compare import compare

    try:
        print(compare(args.results, args.task, args.a, args.b, args.metric, args.data_source), end="")
    except (KeyError, ValueError) as exc:
        print(f"harness: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from harness.synth import write_world

        try:
            info = write_world(Path(args.out), sources=tuple(args.sources), scale=args.scale, seed=args.seed,
                               calibration=args.calibration, progress=not args.quiet)
        except ValueError as exc:  # unknown source, bad scale, unusable calibration: raised before writing
            print(f"harness: error: data synth: {exc}", file=sys.stderr)
            return 2
        print(f"synthetic world written to {args.out} (calibration {info['calibration']}): {info['counts']}")
        return 0
    from harness.catalog import DATASETS
    from harness.data.check import decode_images
    from harness.data.roots import resolve_data_root

    root = resolve_data_root(args.root)
    report = DATASETS.get(args.dataset).check(root.path)
    decode_images(report, workers=args.workers, progress=not args.quiet)
    print(report.render())
    return 0 if report.ok else 2  # 0 only when a run could use the data: present and no problem


def cmd_submit(args: argparse.Namespace) -> int:
    """Check the submission (name, pretraining data, encoder, capabilities) before any job, then score it.

    One failing run stops nothing: it is printed with its reason, gets a failure record
    (``harness.dispatch.failures``) and makes the exit code 1.
    """
    from harness.dispatch import failures
    from harness.dispatch.runner import RunRequest, execute, load_method
    from harness.encoders.submission import (
        capable_tasks,
        check_name,
        ensure_registered,
        refuse_earlier_submission,
        register_plugins,
        submission_spec,
    )

    check_name(args.name)
    spec = submission_spec(args.spec, args.arch, args.weights, args.pretraining_data)
    register_plugins()  # installed plugins' names are taken, like the built-in methods'
    ensure_registered(args.name, spec)
    method = load_method(args.name)  # builds and checks the encoder
    caps = set(method.card.capabilities)
    tasks = capable_tasks(caps, args.tasks, args.tasks_dir)
    refuse_earlier_submission(args.name, args.results, method)
    print(f"{args.name}: capabilities {sorted(caps)}; scoring on {[t.name for t in tasks]}")
    requests = [RunRequest(method=args.name, task=t.name, fraction=f, seed=s, profile=args.profile,
                           data_root=args.data_root, results_dir=args.results, save_predictions=args.save_predictions,
                           device=args.device, progress=not args.quiet, tasks_dir=args.tasks_dir, submission=spec)
                for t in tasks for f in (args.fractions or t.fractions) for s in (args.seeds or t.seeds)]
    if getattr(args, "executor", "debug") != "debug":
        from harness.dispatch.outcomes import describe, dispatch_runs

        outcomes = dispatch_runs(requests, args)
        print(describe(outcomes))
        return 0 if all(o.status == "done" for o in outcomes) else 1
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


def cmd_regress(args: argparse.Namespace) -> int:
    from harness.reporting.regress import run_regress

    if args.regenerate_reference:
        from harness.reporting.reference import regenerate

        print(f"wrote {regenerate()}")
        return 0
    code, text = run_regress(args.results, args.against, args.out, args.data_source, args.tolerance)
    print(text)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    from harness.dispatch.failures import expected_types

    expected = expected_types()  # one list of expected mistakes: these print one line and exit 2
    handlers = {"run": cmd_run, "ls": cmd_ls, "validate": cmd_validate, "leaderboard": cmd_leaderboard,
                "compare": cmd_compare,
                "data": cmd_data, "regress": cmd_regress, "submit": cmd_submit}
    if args.command == "sweep":
        from harness.dispatch import sweep

        handlers["sweep"] = sweep.run_sweep
    if args.command == "bench":
        import harness.bench.command as bench

        handlers["bench"] = bench.cmd_bench
    try:
        return handlers[args.command](args)
    except expected as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
