"""The shared base of the baselines: ``BaselineMethod`` (the Method plumbing) and ``TrainingConfig``.

Every registered baseline is a ``BaselineMethod`` whose config extends the shared fields; the
base's ``load`` refuses what the method cannot use (no checkpoint for a trained method, one
for a method that does not train, one without the method's tensors) with a message naming it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from baselines.common.config import MethodConfig, TrainingConfig
from baselines.common.method import BaselineMethod
from baselines.common.train import WEIGHTS_FORMAT, TrainConfig, atomic_save
from harness.catalog import METHODS
from harness.encoders import MethodCard, Preprocess, PretrainRequest


def plain(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_baseline_is_a_baseline_method_whose_config_extends_the_shared_fields(name):
    method = METHODS.get(name)()
    assert isinstance(method, BaselineMethod) and method.name == method.card.name == name
    base = TrainingConfig if method.pretrains else MethodConfig
    assert issubclass(method.config_class, base)
    shared = {f.name for f in dataclasses.fields(base)}
    for profile, values in method.profiles.items():
        assert set(values) == {f.name for f in dataclasses.fields(method.config_class)}, (name, profile)
        assert shared <= set(values)
        cfg = method.config(values)  # a profile is the plain form of its config: nothing lost, nothing added
        as_dict = dataclasses.asdict(cfg)
        assert plain(as_dict) == plain(values), (name, profile)


@pytest.mark.parametrize("name", METHODS.names())
def test_load_refuses_a_missing_or_an_unwanted_checkpoint(name, tmp_path):
    method = METHODS.get(name)()
    config = method.profiles["smoke"]
    if method.pretrains:
        with pytest.raises(ValueError, match=rf"^{name}: needs the checkpoint that pretrain returned \(got None\)$"):
            method.load(None, config)
    else:
        request = PretrainRequest(data=None, config=dict(config), workdir=tmp_path, seed=0, device="cpu")
        assert method.pretrain(request) is None
        given = tmp_path / "final.pt"
        with pytest.raises(ValueError, match=rf"^{name}: takes no checkpoint \(got {re.escape(str(given))}\)"):
            method.load(given, config)


@pytest.mark.parametrize(("name", "part"), [("moco", r"MoCo query encoder \('encoder_q\.backbone\.\*'\)"),
                                            ("msn", r"MSN target backbone \('target_backbone\.\*'\)")])
def test_load_names_the_tensors_a_checkpoint_lacks(name, part, tmp_path):
    checkpoint = tmp_path / "final.pt"
    atomic_save({"format": WEIGHTS_FORMAT, "step": 1, "model": {"head.weight": torch.zeros(2)}, "meta": {}},
                checkpoint)
    method = METHODS.get(name)()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(checkpoint))}: no {part} in this checkpoint$"):
        method.load(checkpoint, method.profiles["smoke"])


def test_a_method_without_its_hooks_says_which_is_missing(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class TinyConfig(MethodConfig):
        image_size: int = 16

    class Half(BaselineMethod):
        name, paper, config_class = "half", "test", TinyConfig
        profiles = {p: dataclasses.asdict(TinyConfig()) for p in ("smoke", "small", "paper")}

    with pytest.raises(NotImplementedError, match="Half.card_for"):
        Half()

    class WithCard(Half):
        def card_for(self, cfg):
            return MethodCard(name=self.name, paper=self.paper, preprocess=Preprocess(cfg.image_size, 1, (0.5,),
                                                                                        (0.5,)))

    method = WithCard()
    request = PretrainRequest(data=None, config=method.profiles["smoke"], workdir=tmp_path, seed=0, device="cpu")
    with pytest.raises(NotImplementedError, match="WithCard.train"):
        method.pretrain(request)
    with pytest.raises(ValueError, match="half config: unknown key 'imagesize'; did you mean 'image_size'"):
        method.config({"imagesize": 8})


def test_training_config_budget_batch_share_and_loop_settings(tmp_path):
    cfg = TrainingConfig(batch_size=6, epochs=2.5, checkpoint_every=7, log_every=3, amp="off")
    assert cfg.total_steps(10) == 5  # ceil(2.5 * 10 / 6)
    assert dataclasses.replace(cfg, steps=3).total_steps(10) == 3
    assert cfg.rank_batch(3, "x") == 2
    with pytest.raises(ValueError, match="^x: batch_size 6 is not divisible by the 4 processes$"):
        cfg.rank_batch(4, "x")
    request = PretrainRequest(data=None, config={}, workdir=Path(tmp_path), seed=11, device="cpu", progress=False)
    loop = TrainConfig.for_method(cfg, request, 5, grad_clip=1.5)
    assert (loop.steps, loop.seed, loop.device, loop.checkpoint_every, loop.log_every, loop.amp, loop.grad_clip,
            loop.progress) == (5, 11, "cpu", 7, 3, "off", 1.5, False)
