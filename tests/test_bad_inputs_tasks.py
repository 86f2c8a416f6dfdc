"""Bad task files and protocol arguments: refused by ``harness validate`` and, with the same line, by
``harness run --tasks-dir`` (exit 2, no traceback, nothing written) before any data is read.

Each case damages a copy of a shipped task the way task files really go wrong: a typo in an argument
or a profile name, YAML 1.1 reading ``1e-4`` as text, a repeated key YAML would silently drop, a
label spelled as another dataset spells it, a lower-case view, a split the dataset does not have
(NIH-14 has no official validation list, OpenI no split at all, CheXpert's file is ``valid.csv``),
a profile override that changes which metrics exist. The second half unit-tests the helper
(``harness.protocols.args``) that every protocol declares its arguments with.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from corpus import cli_error

from harness.catalog import PROTOCOL_ARGS, PROTOCOLS
from harness.cli import main
from harness.protocols import finetune, linear_probe
from harness.protocols.args import REQUIRED, Arg, ArgError, ProtocolArgs, declared
from harness.protocols.base import EvalContext
from harness.protocols.errors import ProtocolError
from harness.tasks import TASKS_DIR, TaskSpecError, load_task


def _sub(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    """An edit replacing ``old`` (which must occur ``count`` times) by ``new``."""

    def edit(text: str) -> str:
        assert text.count(old) == count, (old, text.count(old))
        return text.replace(old, new)

    return edit


# (shipped task, edit, the key, what follows "<key>: " at the start of the message)
CASES = [
    pytest.param("mimic-retrieval-1k", _sub("  block: 1000", "  blocks: 1000"), "protocol_args.blocks",
                 "unknown protocol argument of retrieval; did you mean 'block' or 'ks'?; known: batch_size, block, "
                 "classes, gallery, ks, mode, n_bootstrap, per_class, pool_splits, text_sections", id="arg-name-typo"),
    pytest.param("chexpert-cls", _sub("max_iter: 20,", "max_iters: 20,"), "profile_args.smoke.max_iters",
                 "unknown protocol argument of linear-probe; did you mean 'max_iter'?", id="profile-arg-name-typo"),
    pytest.param("mimic-cls-finetune", _sub("encoder_lr: 1.0e-4", "encoder_lr: 1e-4"), "protocol_args.encoder_lr",
                 "expected a number, got the string '1e-4' (YAML reads exponents without a dot as text: write "
                 "1.0e-4, not 1e-4)", id="yaml-exponent-is-text"),
    pytest.param("mimic-mm-cls", _sub("finetune_image: false", 'finetune_image: "no"'),
                 "protocol_args.finetune_image", "expected true or false, got 'no'", id="bool-as-string"),
    pytest.param("mimic-regen", _sub("  probe_steps: 3000", "  probe_steps: 3000.5"), "protocol_args.probe_steps",
                 "expected an integer, got 3000.5", id="float-for-int"),
    pytest.param("mimic-regen", _sub("mask_ratio: 0.5", "mask_ratio: 1.5"), "protocol_args.mask_ratio",
                 "must be < 1, got 1.5", id="out-of-range"),
    pytest.param("nih14-loc", _sub("threshold: 0.5", "threshold: .nan"), "protocol_args.threshold",
                 "must be a finite number, got nan", id="nan-threshold"),
    pytest.param("mimic-regen", _sub("probe_width: 32,", "probe_width: 30,"), "profile_args.small.probe_width",
                 "must be a multiple of 8 (GroupNorm(8)), got 30", id="probe-width-groupnorm"),
    pytest.param("mimic-5x200", _sub("mode: class-5x200", "mode: class-5x20"), "protocol_args.mode",
                 "'class-5x20' is not one of ['pairs', 'class-5x200']; did you mean 'class-5x200'?",
                 id="choice-typo"),
    pytest.param("nih14-regen", _sub("patch_sizes: [8, 16, 32]", "patch_sizes: [8, 16, 16]"),
                 "protocol_args.patch_sizes", "16 is repeated", id="repeated-patch-size"),
    pytest.param("nih14-loc", _sub('templates: ["there is {label}"]', 'templates: ["{label} in the {location}"]'),
                 "protocol_args.templates[0]",
                 "template '{label} in the {location}' does not format with only {label}: KeyError 'location'",
                 id="template-with-another-field"),
    pytest.param("mimic-retrieval-1k", _sub("  batch_size: 64\n", "  batch_size: 64\n  per_class: 200\n"),
                 "protocol_args.per_class", "has no effect here: it applies only with mode: class-5x200",
                 id="arg-without-effect"),
    pytest.param("mimic-mm-cls", _sub("num_layers: 1,\n          num_heads: 2,",
                                      "num_layers: 1,\n          num_heads: 3,"),
                 "profile_args.smoke.num_heads", "hidden_size 32 is not a multiple of num_heads 3",
                 id="heads-do-not-divide-width"),
    pytest.param("mimic-cls", _sub("metrics: [auroc_macro, auroc_micro, auprc_macro, f1_macro]",
                                   "metrics: [auroc_macro, auroc_micro, auprc_marco, f1_macro]"), "metrics",
                 "cannot compute metric(s) ['auprc_marco']; did you mean 'auprc_macro' or 'auroc_macro' or "
                 "'auroc_micro'?; linear-probe gives "
                 "['auprc_macro', 'auroc_macro', 'auroc_micro', 'f1_macro'] with these arguments", id="unknown-metric"),
    pytest.param("mimic-5x200", _sub("t2i_prec1, t2i_prec5, t2i_prec10]\nmain_metric: i2t_prec5",
                                     "t2i_prec1, t2i_prec5, t2i_prec10, r_mean]\nmain_metric: r_mean"), "metrics",
                 "cannot compute metric(s) ['r_mean']; retrieval gives", id="main-metric-of-another-mode"),
    pytest.param("mimic-retrieval", _sub("smoke: {n_bootstrap: 20, batch_size: 16}",
                                         "smoke: {n_bootstrap: 20, batch_size: 16, ks: [1, 5]}"), "metrics",
                 "cannot compute metric(s) ['i2t_r10', 't2i_r10']", id="profile-drops-a-metric"),
    pytest.param("nih14-cls", _sub("Consolidation, Edema, Effusion,", "Consolidation, Edema, Pleural Effusion,"),
                 "labels", "'Pleural Effusion' is not a label of nih14 (dataset); nih14 calls it 'Effusion'",
                 id="label-spelled-as-chexpert-does"),
    pytest.param("chexpert-ext", _sub("eval_dataset: chexpert", "eval_dataset: nih14"), "labels",
                 "'Pleural Effusion' is not a label of nih14 (eval_dataset); nih14 calls it 'Effusion'",
                 id="label-missing-in-eval-dataset"),
    pytest.param("mimic-cls", _sub("views: [PA, AP]", "views: [pa, ap]"), "views",
                 "'pa' is not a view of mimic-cxr (views: ['PA', 'AP', 'LATERAL', 'LL', 'AP AXIAL', 'AP LLD', "
                 "'AP RLD', 'PA LLD', 'PA RLD', 'LAO', 'RAO', 'LPO', 'SWIMMERS', 'XTABLE LATERAL', '']); did you "
                 "mean 'PA'?", id="lower-case-view"),
    pytest.param("openi-cls", _sub("views: null  # every view: see source", "views: [PA, AP]"), "views",
                 "'PA' is not a view of openi (views: ['', 'FRONTAL', 'LATERAL'])", id="openi-has-no-projection"),
    pytest.param("chexpert-ext", _sub("views: [PA, AP]", "views: [FRONTAL]"), "views",
                 "['FRONTAL'] select no image of mimic-cxr (dataset; its views:", id="view-of-one-dataset-only"),
    pytest.param("openi-cls", _sub("split: {method: patient-hash,", "split: {method: official,"), "split.method",
                 "'official': openi has no official split; use patient-hash", id="official-split-on-openi"),
    pytest.param("nih14-cls", _sub("test_split: test,", "test_split: val,"), "split.test_split",
                 "'val' is not an official test split of nih14; it has ['test']", id="nih14-has-no-val-list"),
    pytest.param("chexpert-cls", _sub("test_split: val,", "test_split: valid,"), "split.test_split",
                 "'valid' is not one of ['train', 'val', 'test']; did you mean 'val'?", id="valid-csv-name"),
    pytest.param("openi-cls", _sub("salt: openi-v1}", "salt: openi-v1, test_split: val}"), "split.test_split",
                 "'val' has no effect with split.method 'patient-hash'", id="test-split-with-patient-hash"),
    pytest.param("openi-cls", _sub("test_fraction: 0.2,", "test_fraction: 0.9,"), "split",
                 "val_fraction 0.1 + test_fraction 0.9 leave no training patients", id="no-training-patients"),
    pytest.param("mimic-cls", _sub("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), "seeds", "1 is repeated",
                 id="repeated-seed"),
    pytest.param("mimic-cls", _sub("seeds: [0, 1, 2]", "seeds: [0, -1]"), "seeds",
                 "-1 is negative (seeds are non-negative integers)", id="negative-seed"),
    pytest.param("mimic-cls", _sub("fractions: [0.01, 0.1, 1.0]", "fractions: [0.1, 0.1, 1.0]"), "fractions",
                 "0.1 is repeated", id="repeated-fraction"),
    pytest.param("mimic-retrieval", _sub("fractions: [1.0]", "fractions: [0.1, 1.0]"), "fractions",
                 "retrieval is zero-shot (nothing is trained): only 1.0 has a meaning, got [0.1, 1.0]",
                 id="fraction-of-zero-shot"),
    pytest.param("mimic-retrieval", _sub("requires: [image, text]", "requires: [image]"), "requires",
                 "retrieval needs capability ['text']; the task lists ['image']", id="requires-too-little"),
    pytest.param("mimic-cls", _sub("labels: [Atelectasis,", "labels: [Atelectasis, Atelectasis,"), "labels",
                 "'Atelectasis' is repeated", id="repeated-label"),
    pytest.param("mimic-5x200", _sub("classes: [Atelectasis,", "classes: [Pneumonia,"), "protocol_args.classes",
                 "['Pneumonia'] are not among the task's labels", id="class-not-a-label"),
    pytest.param("chexpert-cls", _sub("  bootstrap: 1000\n", "  bootstrap: 1000\n  bootstrap: 20\n"),
                 "protocol_args.bootstrap", "repeated key (lines 38 and 39); YAML would keep only the last",
                 id="repeated-yaml-key"),
    pytest.param("chexpert-cls", _sub("Pleural Effusion: one}", "Pleural Efusion: one}"), "label_policy.per_label",
                 "unknown label(s) ['Pleural Efusion']; did you mean 'Pleural Effusion'? (it may name only the task's "
                 "labels)", id="per-label-typo"),
    pytest.param("mimic-cls", _sub("  smoke: {", "  smok: {"), "profile_args",
                 "unknown profile 'smok'; did you mean 'smoke'?; profiles: ['smoke', 'small', 'paper']",
                 id="profile-name-typo"),
    pytest.param("mimic-cls", _sub("  small: {l2_grid: [1.0, 1.0e-2, 1.0e-4], max_iter: 100, bootstrap: 200}",
                                   "  small:"), "profile_args.small",
                 "expected a mapping of protocol arguments, got null", id="empty-profile"),
    pytest.param("mimic-cls", _sub("labels: [Atelectasis, Cardiomegaly, Consolidation, Edema, Enlarged "
                                   "Cardiomediastinum, Fracture, Lung Lesion,\n         Lung Opacity, No Finding, "
                                   "Pleural Effusion, Pleural Other, Pneumonia, Pneumothorax, Support Devices]",
                                   "labels: []"), "labels",
                 "task 'mimic-cls' lists no labels; linear-probe needs some", id="classification-without-labels"),
]


def _damaged(tmp_path: Path, task: str, edit: Callable[[str], str]) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    text = (TASKS_DIR / f"{task}.yaml").read_text()
    path = folder / f"{task}.yaml"
    path.write_text(edit(text))
    return path


def _refused_alike(path: Path, tmp_path: Path, capsys) -> str:
    """``harness validate`` and ``harness run --tasks-dir`` refuse ``path`` with one and the same line."""
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("ERROR  ") and out[1] == "0 valid, 1 invalid", out
    message = out[0][len("ERROR  "):]
    results = tmp_path / "results"
    line = cli_error(["run", "--method", "random", "--task", path.stem, "--tasks-dir", str(path.parent),
                      "--profile", "smoke", "--results", str(results)], capsys)
    assert line == f"harness: error: {message}"
    assert not results.exists()  # refused before any work
    return message


@pytest.mark.parametrize("task, edit, key, what", CASES)
def test_bad_task_file_is_refused_by_validate_and_run_alike(task, edit, key, what, tmp_path, capsys):
    path = _damaged(tmp_path, task, edit)
    message = _refused_alike(path, tmp_path, capsys)
    assert message.startswith(f"{path}: {key}: {what}"), message


def test_file_level_damage(tmp_path, capsys):
    """Not UTF-8, a tab where YAML wants spaces, an empty file: one line each, never a traceback."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    path = folder / "mimic-cls.yaml"
    text = (TASKS_DIR / "mimic-cls.yaml").read_text()
    path.write_bytes(text.replace("Frozen-feature", "Frozen-feature (\u00e9tude)").encode("latin-1"))
    offset = text.index("Frozen-feature") + len("Frozen-feature (")
    assert _refused_alike(path, tmp_path, capsys) == (f"{path}: not UTF-8 text (byte 0xe9 at offset {offset}); save "
                                                      "the file as UTF-8")
    path.write_text(text.replace("  max_iter: 200", "\tmax_iter: 200"))
    line = text[:text.index("  max_iter: 200")].count("\n") + 1
    message = _refused_alike(path, tmp_path, capsys)
    assert message.startswith(f"{path}: not valid YAML at line {line}, column 1: found character '\\t' that cannot "
                              "start any token"), message
    path.write_text("# nothing yet\n")
    assert _refused_alike(path, tmp_path, capsys) == f"{path}: the file is empty"


def test_validate_reports_every_bad_file_and_passes_the_good_ones(tmp_path, capsys):
    folder = tmp_path / "tasks"
    folder.mkdir()
    good = folder / "mock.yaml"
    good.write_text((TASKS_DIR / "mock.yaml").read_text())
    bad_seed = _damaged(tmp_path, "mimic-cls", _sub("seeds: [0, 1, 2]", "seeds: [2, 2]"))
    bad_view = _damaged(tmp_path, "nih14-cls", _sub("views: [PA, AP]", "views: [PA, LL]"))
    missing = folder / "nope.yaml"
    assert main(["validate", str(good), str(bad_seed), str(bad_view), str(missing)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"ok     {good}",
        f"ERROR  {bad_seed}: seeds: 2 is repeated",
        f"ERROR  {bad_view}: views: 'LL' is not a view of nih14 (views: ['PA', 'AP', 'LATERAL'])",
        f"ERROR  {missing}: cannot read the task file: No such file or directory",
        "1 valid, 3 invalid",
    ]


def test_zero_shot_task_refuses_a_fraction_before_any_work(tmp_path, capsys):
    line = cli_error(["run", "--method", "random", "--task", "mimic-retrieval", "--fraction", "0.5",
                      "--results", str(tmp_path / "r")], capsys)
    assert line == ("harness: error: --fraction: retrieval is zero-shot (nothing is trained): fraction 0.5 has no "
                    "meaning")
    assert not (tmp_path / "r").exists()


def test_submit_refuses_a_bad_task_file(tmp_path, capsys):
    path = _damaged(tmp_path, "mimic-cls", _sub("seeds: [0, 1, 2]", "seeds: [0, 0]"))
    line = cli_error(["submit", "examples.my_encoder:build", "--name", "my-enc", "--tasks", "mimic-cls",
                      "--tasks-dir", str(path.parent), "--results", str(tmp_path / "r")], capsys)
    assert line == f"harness: error: {path}: seeds: 0 is repeated"
    assert not (tmp_path / "r").exists()


def test_sweep_refuses_a_bad_task_file_before_submitting_anything(tmp_path, capsys):
    path = _damaged(tmp_path, "mimic-cls", _sub("fractions: [0.01, 0.1, 1.0]", "fractions: [0.01, 0.01]"))
    root = tmp_path / "data"  # an (empty) data root: without one the sweep would write the synthetic world first
    root.mkdir()
    line = cli_error(["sweep", "--methods", "random", "--tasks", "mimic-cls", "--tasks-dir", str(path.parent),
                      "--data-root", str(root), "--executor", "local", "--results", str(tmp_path / "r"),
                      "--logs", str(tmp_path / "logs")], capsys)
    assert line == f"harness: error: {path}: fractions: 0.01 is repeated"
    assert not (tmp_path / "r").exists() and not (tmp_path / "logs").exists()


# ------------------------------------------------------------------------------------------ the helper

TOY = ProtocolArgs(
    "toy",
    {
        "steps": Arg(int, 10, "steps", ge=1),
        "lr": Arg(float, 0.1, "rate", gt=0, lt=1),
        "grid": Arg(float, [1.0, 0.1], "grid", many=True, ge=0),
        "mode": Arg(str, "a", "mode", choices=("a", "b")),
        "only_b": Arg(int, 3, "used in mode b", when=lambda a: a["mode"] == "b", when_doc="mode: b"),
        "limit": Arg(int, None, "or null", optional=True, ge=1),
        "flag": Arg(bool, False, "a switch"),
        "name": Arg(str, REQUIRED, "no default"),
    },
    metrics=lambda a: [f"m{s}" for s in a["grid"]],
    rules=(lambda a: ("limit", "must not exceed steps") if a["limit"] and a["limit"] > a["steps"] else None,),
    needs_labels=True, zero_shot=True)


def test_resolve_fills_defaults_and_normalises():
    args = TOY.resolve({"name": "x", "lr": 0.5, "steps": 4, "grid": [2, 0.5]})
    assert args == {"steps": 4, "lr": 0.5, "grid": [2.0, 0.5], "mode": "a", "only_b": 3, "limit": None,
                    "flag": False, "name": "x"}
    assert type(args["grid"][0]) is float
    args["grid"].append(9.0)  # a caller's list is its own: the declared default is untouched
    assert TOY.resolve({"name": "y"})["grid"] == [1.0, 0.1] and TOY.default("grid") == [1.0, 0.1]


@pytest.mark.parametrize("given, key, what", [
    ({"name": "x", "stpes": 3}, "stpes", "unknown protocol argument of toy; did you mean 'steps'?; known: flag, "
                                         "grid, limit, lr, mode, name, only_b, steps"),
    ({}, "name", "missing required protocol argument of toy (a string)"),
    ({"name": "x", "steps": True}, "steps", "expected an integer, got True"),
    ({"name": "x", "steps": 2.0}, "steps", "expected an integer, got 2.0"),
    ({"name": "x", "steps": 0}, "steps", "must be >= 1, got 0"),
    ({"name": "x", "lr": 1}, "lr", "must be < 1, got 1.0"),
    ({"name": "x", "lr": "3e-4"}, "lr", "expected a number, got the string '3e-4' (YAML reads exponents"),
    ({"name": "x", "lr": "fast"}, "lr", "expected a number, got 'fast'"),
    ({"name": "x", "lr": float("inf")}, "lr", "must be a finite number, got inf"),
    ({"name": "x", "lr": None}, "lr", "expected a number > 0 < 1, got null"),
    ({"name": "x", "grid": 0.1}, "grid", "expected a list of numbers >= 0, got 0.1"),
    ({"name": "x", "grid": []}, "grid", "expected a non-empty list"),
    ({"name": "x", "grid": [1, 1.0]}, "grid", "1.0 is repeated"),
    ({"name": "x", "grid": [1, -1]}, "grid[1]", "must be >= 0, got -1.0"),
    ({"name": "x", "mode": "B"}, "mode", "'B' is not one of ['a', 'b']; did you mean 'b'?"),
    ({"name": "x", "only_b": 4}, "only_b", "has no effect here: it applies only with mode: b"),
    ({"name": "x", "limit": 0}, "limit", "must be >= 1, got 0"),
    ({"name": "x", "limit": 20}, "limit", "must not exceed steps"),
    ({"name": "x", "flag": "yes"}, "flag", "expected true or false, got 'yes'"),
    ({"name": 5}, "name", "expected a string, got 5"),
])
def test_resolve_names_the_key_and_what_is_wrong(given, key, what):
    with pytest.raises(ArgError) as err:
        TOY.resolve(given)
    assert err.value.key == key and err.value.what.startswith(what), err.value.what
    assert str(err.value) == f"{err.value.key}: {err.value.what}" and "\n" not in str(err.value)


def test_optional_and_conditional_arguments_accept_what_they_should():
    assert TOY.resolve({"name": "x", "limit": None})["limit"] is None
    assert TOY.resolve({"name": "x", "mode": "b", "only_b": 7})["only_b"] == 7
    assert TOY.resolve({"name": "x", "limit": 10})["limit"] == 10  # the rule's boundary


@dataclasses.dataclass
class _Task:
    name: str = "t"
    metrics: tuple[str, ...] = ("m1.0",)
    main_metric: str = "m1.0"
    labels: tuple[str, ...] = ("A",)


def test_check_task_and_fraction():
    args = TOY.resolve({"name": "x"})
    TOY.check_task(_Task(), args)
    cases = [(_Task(metrics=("m1.0", "m2.0")), "metrics",
              "cannot compute metric(s) ['m2.0']; did you mean 'm1.0' or 'm0.1'?; toy gives ['m0.1', 'm1.0'] with "
              "these arguments"),
             (_Task(main_metric="m0.5"), "main_metric", "'m0.5' is not produced by toy"),
             (_Task(labels=()), "labels", "task 't' lists no labels; toy needs some")]
    for task, key, what in cases:
        with pytest.raises(ArgError) as err:
            TOY.check_task(task, args)
        assert (err.value.key, err.value.what) == (key, what)
    TOY.check_task(_Task(metrics=("m2.0",), main_metric="m2.0"), TOY.resolve({"name": "x", "grid": [2]}))
    TOY.check_fraction(1.0)
    with pytest.raises(ArgError, match=r"^fraction: toy is zero-shot \(nothing is trained\): fraction 0.5 has no"):
        TOY.check_fraction(0.5)


def test_read_raises_protocol_error_with_the_protocol_in_front(tmp_path):
    ctx = EvalContext(task=_Task(), data=None, encoder=None, preprocess=None, args={"name": "x", "steps": -1},
                      fraction=1.0, seed=0, profile="smoke", device="cpu", workdir=tmp_path, weights_sha256="")
    with pytest.raises(ProtocolError) as err:
        TOY.read(ctx)
    assert str(err.value) == "toy: steps: must be >= 1, got -1"
    ctx.args = {"name": "x"}
    ctx.fraction = 0.1
    with pytest.raises(ProtocolError, match="^toy: fraction: toy is zero-shot"):
        TOY.read(ctx)
    ctx.fraction = 1.0
    assert TOY.read(ctx)["steps"] == 10


def test_every_protocol_declares_its_arguments_and_the_defaults_are_valid():
    assert PROTOCOL_ARGS.names() == PROTOCOLS.names()
    for name in PROTOCOLS.names():
        decl = declared(name)
        assert decl is not None and decl.protocol == name
        defaults = decl.resolve({})  # every default passes its own declaration
        for arg_name, arg in decl.args.items():
            assert arg.help, (name, arg_name)
            assert arg.validate(arg.default, arg_name) == defaults[arg_name]
        assert decl.produced(defaults), name
    assert declared("no-such-protocol") is None


def test_protocols_read_only_declared_arguments():
    """A source scan: every ``args["x"]`` a protocol module reads is in its ``ARGS``; the config
    dataclasses of the linear probe and fine-tuning are exactly their declarations, defaults included."""
    root = Path(__file__).resolve().parent.parent / "harness" / "protocols"
    for module in ("finetune", "linear_probe", "localization", "multimodal", "regeneration", "retrieval"):
        source = (root / f"{module}.py").read_text()
        read = set(re.findall(r"args\[\"(\w+)\"\]", source))
        decl = declared(module.replace("_", "-").replace("multimodal", "multimodal-cls"))
        assert read <= set(decl.args), (module, read - set(decl.args))
    for config, decl in ((linear_probe.ProbeConfig, linear_probe.ARGS), (finetune.FinetuneConfig, finetune.ARGS)):
        fields = {f.name: f.default for f in dataclasses.fields(config)}
        assert set(fields) == set(decl.args)
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()} == decl.resolve({})


def test_every_shipped_task_passes_every_profile():
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        spec = load_task(path)
        decl = declared(spec.protocol)
        for profile in ("smoke", "small", "paper"):
            decl.check_task(spec, decl.resolve(spec.args_for(profile)))


def test_load_task_error_is_a_task_spec_error_naming_the_file(tmp_path):
    path = _damaged(tmp_path, "mock", _sub("protocol_args: {}", "protocol_args: {l2_grid: []}"))
    with pytest.raises(TaskSpecError) as err:
        load_task(path)
    assert str(err.value) == f"{path}: protocol_args.l2_grid: expected a non-empty list"
