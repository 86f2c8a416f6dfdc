"""The ``harness`` argument parser: every subcommand, its options and its examples (``--help``).

Building the parser imports no torch: ``harness ls`` and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import textwrap

from harness import __version__
from harness.bench.command import add_bench_arguments
from harness.bench.power.command import add_power_arguments
from harness.dispatch import executors, sweep
from harness.dispatch.pretraining import add_pretrain_on_argument
from harness.storage import REPOSITORY

PUBLISHED_DEFAULT = REPOSITORY / "leaderboards" / "published.yaml"

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
    """The options of ``harness run``: the method, the task, the run's choices, data and results."""
    p.add_argument("--method", required=True, help="method name (see `harness ls methods`)")
    p.add_argument("--task", required=True, help="task name (see `harness ls tasks`)")
    p.add_argument("--fraction", type=float, default=1.0, help="label fraction of the training split (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (fraction subset, probe init, bootstrap)")
    p.add_argument("--profile", choices=("smoke", "small", "paper"), default=None,
                   help="default: small on synthetic data, paper on real data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method config key (dotted, YAML value); repeatable")
    add_pretrain_on_argument(p)
    _add_common(p)
    p.add_argument("--save-predictions", action="store_true",
                   help="also write embeddings and example images next to the record (the per-sample arrays the "
                        "paired bootstrap needs are always written; no text, no identifiers)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="folder with the datasets in their original layouts (env HARNESS_DATA_ROOT); "
                        "default: the embedded synthetic world")
    p.add_argument("--results", default="results", help="results directory (default: results/)")
    p.add_argument("--tasks-dir", default=None, metavar="DIR",
                   help="folder of task files (default: the repository's tasks/), e.g. a task on your hf/<name> "
                        "collection")


def build_parser() -> argparse.ArgumentParser:
    """The ``harness`` parser: global options, then one subparser per command of ``harness.cli.commands``."""
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

    p = _sub(sub, "leaderboard", "render markdown leaderboards from result records, and the published figures", """
        python -m harness leaderboard
        python -m harness leaderboard --results results --out leaderboards
        python -m harness leaderboard --reference imagenet     # paired differences against imagenet's row
        python -m harness leaderboard --published none         # records only, no published tables
    """)
    p.add_argument("--results", default="results")
    p.add_argument("--out", default="leaderboards")
    p.add_argument("--reference", default="random", metavar="ROW",
                   help="the row every other row is compared with by a paired bootstrap (default: random; a row "
                        "whose method uses the task's labels is never the reference)")
    p.add_argument("--published", default=str(PUBLISHED_DEFAULT), metavar="FILE",
                   help="published figures rendered under <out>/published/ (default: leaderboards/published.yaml; "
                        "'none': skip)")

    p = _sub(sub, "export", "write result records and leaderboard tables as parquet that `datasets` loads", """
        python -m harness export --results results --out hf-results
        python -m harness export --out hf-results   # then, in Python:
        # datasets.load_dataset("parquet", data_files="hf-results/synthetic/results/*/*/mimic-cls.parquet")
    """)
    p.add_argument("--results", default="results")
    p.add_argument("--out", required=True, help="folder to write (absent, empty, or an earlier export: replaced)")

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
    ps.add_argument("--scale", type=float, default=None,
                    help="multiplies every source's patients; default: the default world's (12; 1 is the "
                         "unit world, about 1,200 MIMIC images; 0.05 makes a world for quick checks)")
    ps.add_argument("--workers", type=int, default=None,
                    help="processes rendering images (default: $HARNESS_SYNTH_WORKERS, else every CPU); "
                         "the bytes written do not depend on it")
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
        python -m harness submit hf:~/models/rad-dino --name rad-dino --pretraining-data mimic-cxr:train
        python -m harness submit open_clip:~/models/biomedclip --name biomedclip --check
        python -m harness submit open_clip:ViT-B-32-quickgelu --weights chexzero.pt --name chexzero \\
            --pixel-range 0 255 --mean 101.48761 --std 83.43944
        python -m harness submit xrv:densenet121-res224-all --weights xrv-all.pt --name xrv-all
        python -m harness submit torchvision:resnet50 --weights moco_v2_800ep.pth.tar \\
            --key-prefix module.encoder_q. --name moco-v2 --pretraining-data imagenet:train
        python -m harness submit --arch resnet50 --weights my_weights.safetensors --name my-r50
    """)
    p.add_argument("spec", nargs="?", default=None,
                   help="package.module:factory | a plugin name | timm:NAME | torchvision:NAME | torchxrayvision:NAME "
                        "| hf:DIR | open_clip:DIR | open_clip:ARCH")
    p.add_argument("--name", required=True, help="the name it gets on the leaderboard: letters, digits, . _ + -; "
                                                  "not a built-in method's, nor an earlier different submission's")
    p.add_argument("--arch", default=None, help="with --weights: resnet18 | resnet50 | vit_tiny | efficientnet_lite0 "
                                                "| timm:NAME | torchvision:NAME")
    p.add_argument("--weights", default=None, help=".safetensors or a torch file read weights-only (state dict, "
                                                   "checkpoint, Lightning .ckpt); code in a pickle is never run")
    p.add_argument("--checkpoint-key", default=None, metavar="SECTION",
                   help="the checkpoint section holding the weights (dotted; default: the first of state_dict, "
                        "model, teacher, encoder, ...)")
    p.add_argument("--key-prefix", default=None, metavar="PREFIX",
                   help="keep only the keys under this prefix, without it (e.g. module.encoder_q.)")
    _add_preprocessing(p)
    p.add_argument("--pretraining-data", nargs="+", default=None, metavar="DATASET:SPLIT",
                   help="with a public encoder: what the weights saw, for the leakage flag: a harness dataset or "
                        "imagenet, imagenet-21k, laion, ... (harness.encoders.provenance), split train|val|test|all "
                        "(e.g. mimic-cxr:train imagenet:train); default: unknown")
    p.add_argument("--pretraining-manifest", default=None, metavar="FILE",
                   help="the image, study or patient ids the weights were trained on (text or CSV): the patient "
                        "overlap with each task's validation and test sets is computed locally (counts only)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="score even where the manifest overlaps a task's validation or test patients (the record "
                        "and the leaderboard row say so)")
    p.add_argument("--text-model", default=None, metavar="DIR",
                   help="a local BERT-style Hugging Face directory: the text side of the image+indication task "
                        "(mimic-mm-cls)")
    p.add_argument("--check", action="store_true",
                   help="build and check the encoder, print its capabilities, preprocessing and embedding "
                        "fingerprint, and the tasks it would be scored on; score nothing")
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

    p = _sub(sub, "convert-weights", "rewrite a checkpoint or a whole pickled model as a flat safetensors file, "
                                     "without running any of its code", """
        python -m harness convert-weights xrv-densenet.pt --out xrv-densenet.safetensors
        python -m harness convert-weights dino_checkpoint.pth --checkpoint-key teacher --key-prefix backbone. \\
            --out dino-teacher.safetensors
    """)
    p.add_argument("file", help="the checkpoint (.pt, .pth, .ckpt, .bin) or a whole pickled model")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--checkpoint-key", default=None, metavar="SECTION", help="the section holding the weights")
    p.add_argument("--key-prefix", default=None, metavar="PREFIX", help="keep only the keys under this prefix")

    _add_sweep(sub)
    _add_bench(sub)
    _add_power(sub)
    return parser


def _add_preprocessing(p: argparse.ArgumentParser) -> None:
    """The preprocessing overrides of a public encoder (default: the architecture's own configuration)."""
    g = p.add_argument_group("preprocessing (public encoders; default: the architecture's own configuration)")
    g.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="resize the square image to N px (without --crop-size: the model's input size)")
    g.add_argument("--crop-size", type=int, default=None, metavar="N", help="then centre-crop N px (the model input)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 (grey) or 3 (grey repeated)")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="M", help="one value, or one per channel")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="S", help="one value, or one per channel")
    g.add_argument("--pixel-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="what pixel values 0 and 255 become before mean/std (default 0 1; torchxrayvision -1024 "
                        "1024; 0 255 for raw pixel values)")
    g.add_argument("--resize-mode", choices=("bilinear", "bicubic", "nearest"), default=None)


def _add_sweep(sub) -> None:
    p = _sub(sub, "sweep", "run a grid of methods x tasks x fractions x seeds as job arrays", """
        python -m harness sweep --methods random moco --tasks mimic-cls nih14-cls --fractions 0.1 1 --seeds 0 1 2
        python -m harness sweep --methods random --tasks mock --profile smoke --executor local
    """)
    sweep.add_sweep_arguments(p)
    executors.add_executor_arguments(p)


def _add_bench(sub) -> None:
    p = _sub(sub, "bench", "measure the harness against naive baselines (ratios, one run, one machine)", """
        python -m harness bench --quick --out /tmp/bench.md
        python -m harness bench --out docs/bench-report.md
    """)
    add_bench_arguments(p)


def _add_power(sub) -> None:
    p = _sub(sub, "power", "measure sizes and 95 % CI half-widths per task (docs/power.md), through the runner", """
        python -m harness power --out docs/power.md
        python -m harness power --methods random imagenet --tasks mimic-cls mimic-regen --profile smoke --out /tmp/p.md
    """)
    add_power_arguments(p)
