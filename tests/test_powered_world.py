"""The default synthetic world's evaluation sizes, from its generation plan (no image is rendered).

Opt-in (``pytest -m powered``, about 20 s on 2 cores): the plan of every source at ``DEFAULT_SCALE``
is sampled exactly as ``write_world`` samples it, and the figures the tasks rely on are counted the
way the adapters and tasks count them: frontal images per official split, report-bearing test pairs
for the R-1k block, single-label studies for 5x200, NIH test images with a box finding. The same
figures measured with the task code on the written world are in docs/datasets.md section 6.1.
"""

from __future__ import annotations

import pytest

from harness.synth import DEFAULT_SCALE, labels, quirks
from harness.synth.world import build_source
from harness.tasks import get_task

pytestmark = pytest.mark.powered
FRONTAL = ("PA", "AP")


def _world(source: str):
    world = build_source(source, scale=DEFAULT_SCALE, seed=0)
    quirks.plant(world)
    return world


def test_mimic_is_sized_for_its_metrics() -> None:
    world = _world("mimic")
    frontal = {s: 0 for s in ("train", "validate", "test")}
    pairs = 0
    single = dict.fromkeys(get_task("mimic-5x200").protocol_args["classes"], 0)
    for st in world.studies:
        n = sum(p.view in FRONTAL for p in st.images)
        frontal[st.split] += n
        pairs += st.split == "test" and n > 0 and st.report_kind == "full"  # FINDINGS and IMPRESSION
        values = labels.chexpert_values(st.mentions)
        positive = [c for c in single if values[c] == "1.0"]
        if st.split in ("validate", "test") and n and len(positive) == 1:
            single[positive[0]] += 1
    assert frontal["test"] >= 2000 and frontal["validate"] >= 500
    assert frontal["train"] > 2 * frontal["test"]  # the unlabelled pretraining pool is the largest
    assert 200 * 32 / frontal["train"] < 1.2  # moco's small profile (200 steps of 32) sees each image about once
    assert pairs >= get_task("mimic-retrieval-1k").protocol_args["block"]  # at least one full 1,000-pair block
    per_class = get_task("mimic-5x200").args_for("small")["per_class"]
    assert min(single.values()) >= per_class, single


def test_chexpert_nih_openi_test_sets() -> None:
    chexpert = _world("chexpert")
    valid = sum(p.view in FRONTAL for st in chexpert.studies if st.split == "valid" for p in st.images)
    assert valid >= 2000
    nih = _world("nih14")
    test = [st for st in nih.studies if st.split == "test"]
    assert len(test) >= 2000
    with_box = sum(any(how != "neg" and m in labels.NIH_BOX_OF for m, how in st.mentions.items()) for st in test)
    assert with_box >= 500  # candidates for nih14-loc; the written world's count is in the docs
    openi = _world("openi")
    assert len(openi.studies) * get_task("openi-cls").split.test_fraction >= 900
