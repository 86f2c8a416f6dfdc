"""The classification task files: they load, name real adapter labels, and their protocol arguments parse
for every profile."""

from __future__ import annotations

import importlib

import pytest

from harness.catalog import PROTOCOLS
from harness.data.schema import CHEXPERT_5, CHEXPERT_14, NIH_14
from harness.protocols.finetune import FinetuneConfig
from harness.protocols.linear_probe import ProbeConfig
from harness.tasks import TASKS_DIR, load_task

TASKS = ["mimic-cls", "chexpert-cls", "nih14-cls", "openi-cls", "chexpert-ext", "mimic-cls-finetune"]
CONFIGS = {"linear-probe": ProbeConfig, "finetune": FinetuneConfig}


def _adapter_labels(dataset: str) -> tuple[str, ...]:
    if dataset == "openi":
        return tuple(importlib.import_module("harness.data.openi").OPENI_LABELS)
    return {"mimic-cxr": CHEXPERT_14, "chexpert": CHEXPERT_14, "nih14": NIH_14}[dataset]


VERSIONS = {"mimic-cls-finetune": 2}  # v2: the fine-tune head behind a non-affine BatchNorm


@pytest.mark.parametrize("name", TASKS)
def test_task_loads_with_adapter_labels_and_parsable_args(name):
    task = load_task(TASKS_DIR / f"{name}.yaml")
    assert task.version == VERSIONS.get(name, 1) and task.fractions == (0.01, 0.1, 1.0) and task.seeds == (0, 1, 2)
    assert task.main_metric == "auroc_macro"
    assert {"auroc_macro", "auroc_micro", "auprc_macro", "f1_macro"} <= set(task.metrics)
    for dataset in filter(None, (task.dataset, task.eval_dataset)):
        missing = set(task.labels) - set(_adapter_labels(dataset))
        assert not missing, f"{name}: {sorted(missing)} are not labels of {dataset}"
    assert task.protocol in PROTOCOLS.names()
    for profile in ("smoke", "small", "paper"):
        CONFIGS[task.protocol].from_args(task.args_for(profile))


def test_chexpert_follows_gloria_uncertain_mapping():
    policy = load_task(TASKS_DIR / "chexpert-cls.yaml").label_policy
    ones = {k for k, v in policy.per_label.items() if v == "one"}
    assert ones == {"Atelectasis", "Edema", "Pleural Effusion"} and policy.uncertain == "zero"
    ext = load_task(TASKS_DIR / "chexpert-ext.yaml")
    assert ext.labels == CHEXPERT_5 and ext.eval_dataset == "chexpert" and ext.split.test_split == "val"
