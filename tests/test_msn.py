"""MSN / MSN+EHR: Sinkhorn marginals, ME-MAX, the EMA target, token masking, trained prototypes, EHR in the
anchor branch only, a smoke pretrain -> load -> encode for both ``msn`` and ``msn-ehr``, the profiles'
recipe settings and pretrain's wiring of them, and a bad recipe value as one CLI error line. The parity
with the two references is tests/test_parity_msn.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import timm
import torch

from baselines.common.backbones import VitBackbone
from baselines.common.train import load_checkpoint
from baselines.msn_ehr import MSNEHRMethod, MSNMethod
from baselines.msn_ehr.losses import MSNLoss, me_max, sinkhorn
from baselines.msn_ehr.model import MSN, build_vit, masked_cls, random_token_keep
from harness.cohort import TrainingData
from harness.data.images import ImageView
from harness.data.schema import DataError
from harness.encoders import PretrainRequest, capabilities
from harness.encoders.preprocess import to_model_input
from tests.support import ArrayStore

torch.set_num_threads(1)


def tiny_vit():
    # ViT-Tiny width and depth as the smoke profile builds it (patch 8, 6 heads), 16 px views: 4 patches
    return build_vit("vit_tiny", patch_size=8, num_heads=6, image_size=32)


def ehr_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """Records with the columns ``harness.data.mimic_cxr`` produces when MIMIC-IV is joined.

    Two images have no MIMIC-IV subject (imputed, counted); two have a missing view / orientation.
    """
    rng = np.random.default_rng(seed)
    available = np.ones(n, dtype=bool)
    available[:2] = False
    frame = pd.DataFrame({
        "dataset": "mock", "image_id": [f"i{i}" for i in range(n)],
        "view": rng.choice(["PA", "AP", "LATERAL"], n).astype(object),
        "orientation": rng.choice(["Erect", "Recumbent"], n).astype(object),
        "ehr_available": available,
        "ehr_sex": np.where(available, rng.choice(["M", "F"], n), ""),
        "ehr_age": np.where(available, rng.integers(20, 90, n).astype(float), np.nan),
        "ehr_age_over_89": False,
        "ehr_stay_expire": rng.integers(0, 2, n).astype(float),
        "ehr_icu_stay": rng.integers(0, 2, n).astype(float),
    })
    frame.loc[2, "view"] = ""
    frame.loc[3, "orientation"] = ""
    return frame


def training_data(n: int, size: int, with_ehr: bool, seed: int = 0) -> TrainingData:
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)
    frame = ehr_frame(n, seed) if with_ehr else pd.DataFrame({"dataset": "mock",
                                                               "image_id": [f"i{i}" for i in range(n)]})
    return TrainingData(dataset="mock", frame=frame, images=ImageView(ArrayStore(images), np.arange(n)),
                        data_source="synthetic", fingerprint=f"test-{n}-{size}-{seed}-{with_ehr}")


# ---------------------------------------------------------------- losses


def test_sinkhorn_rows_sum_to_one_and_columns_to_b_over_k():
    torch.manual_seed(0)
    probs = torch.softmax(3 * torch.randn(8, 4), dim=1)  # B 8, K 4: skewed towards a few prototypes
    q = sinkhorn(probs, iterations=3)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8))  # every sample one unit of mass (last step)
    assert (q >= 0).all()
    q = sinkhorn(probs, iterations=200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((4,), 8 / 4), atol=1e-4, rtol=0)  # balanced prototypes
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8))
    # already balanced assignments (a permutation of one-hot-ish rows) are a fixed point
    balanced = torch.eye(4).repeat(2, 1) * 0.9 + 0.1 / 4
    torch.testing.assert_close(sinkhorn(balanced, 3), balanced / balanced.sum(1, keepdim=True))


def test_me_max_is_log_k_minus_the_entropy_of_the_mean_prediction():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # mean [0.25, 0.5, 0.25]
    expected = math.log(3) - (-(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5)))  # log 3 - 1.5 log 2
    assert me_max(p).item() == pytest.approx(expected, abs=1e-6)
    assert me_max(torch.eye(3)).item() == pytest.approx(0.0, abs=1e-6)  # every prototype used equally
    assert me_max(torch.tensor([[1.0, 0.0, 0.0]] * 2)).item() == pytest.approx(math.log(3), abs=1e-6)


def test_msn_loss_is_cross_entropy_plus_me_max_by_hand():
    torch.manual_seed(0)
    anchors, targets, protos = torch.randn(6, 5), torch.randn(3, 5), torch.randn(4, 5)  # 2 views of 3 images
    loss, parts = MSNLoss(temperature=0.1, sharpen_temperature=0.25, sinkhorn_iterations=0, me_max_weight=1.0)(
        anchors, targets, protos)
    norm = torch.nn.functional.normalize
    p_a = torch.softmax(norm(anchors, dim=1) @ norm(protos, dim=1).T / 0.1, dim=1)
    p_t = torch.softmax(norm(targets, dim=1) @ norm(protos, dim=1).T / 0.1, dim=1) ** 4
    p_t = (p_t / p_t.sum(1, keepdim=True)).repeat(2, 1)
    ce = -(p_t * p_a.log()).sum(1).mean()
    mean = p_a.mean(0)
    torch.testing.assert_close(parts["cross_entropy"], ce)
    torch.testing.assert_close(loss, ce + math.log(4) + (mean * mean.log()).sum())


# ---------------------------------------------------------------- model


def test_target_is_an_ema_of_the_anchor_and_gets_no_gradient():
    torch.manual_seed(0)
    msn = MSN(tiny_vit, num_prototypes=8, momentum=0.9)
    for a, t in zip(msn.anchor_parameters(), msn.target_parameters(), strict=True):
        assert torch.equal(a, t) and not t.requires_grad  # starts as a copy, never trained by gradient
    views = [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.randn(4, 1, 16, 16)]
    anchors, targets, prototypes = msn(views)
    assert anchors.shape == (8, 192) and targets.shape == (4, 192) and not targets.requires_grad
    loss, _ = MSNLoss()(anchors, targets, prototypes)
    loss.backward()
    assert all(t.grad is None for t in msn.target_parameters())
    with torch.no_grad():
        for p in msn.anchor_parameters():
            p.add_(torch.randn_like(p))  # as if an optimiser step had moved the anchor branch
    before_a = [p.detach().clone() for p in msn.anchor_parameters()]
    before_t = [p.detach().clone() for p in msn.target_parameters()]
    msn.momentum_update_target()
    for a, t_old, t_new in zip(before_a, before_t, msn.target_parameters(), strict=True):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * a)


def test_masking_drops_the_configured_fraction_of_patch_tokens():
    keep = random_token_keep(5, 196, 0.15, torch.Generator().manual_seed(0))
    assert keep.shape == (5, 166)  # 224 px / patch 16: 196 patches, floor(196 * 0.85) kept (30 masked)
    assert all(len(set(row.tolist())) == 166 for row in keep) and keep.max() < 196
    assert random_token_keep(2, 36, 0.15, None).shape == (2, 30)  # 96 px focal view

    vit = tiny_vit()
    seen = []
    hook = vit.vit.blocks.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    images = torch.randn(2, 1, 64, 64)  # 8 x 8 = 64 patches
    masked_cls(vit, images, 0.15, torch.Generator().manual_seed(0))
    masked_cls(vit, images, 0.5, torch.Generator().manual_seed(0))
    masked_cls(vit, images, 0.0)
    hook.remove()
    prefix = vit.vit.num_prefix_tokens
    assert seen == [prefix + 54, prefix + 32, prefix + 64]  # int(64 * 0.85) = 54 patches kept


def test_prototypes_receive_gradients_unless_frozen_like_the_released_code():
    for train, expect in ((True, True), (False, False)):
        torch.manual_seed(0)
        msn = MSN(tiny_vit, num_prototypes=8, train_prototypes=train)
        views = [torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.randn(4, 1, 16, 16)]
        loss, _ = MSNLoss()(*msn(views))
        loss.backward()
        got = msn.prototypes.grad is not None and msn.prototypes.grad.abs().sum().item() > 0
        assert got == expect
        assert msn.anchor_backbone.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_ehr_enters_the_anchor_branch_only():
    torch.manual_seed(0)
    msn = MSN(tiny_vit, num_prototypes=8, ehr_in=13, ehr_embed_dim=128).eval()
    assert msn.ehr_fusion.ehr_projection.weight.shape == (128, 13)
    assert msn.ehr_fusion.fusion.weight.shape == (192, 192 + 128)
    views = [torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32), torch.randn(3, 1, 16, 16)]
    a1, t1, _ = msn(views, torch.zeros(3, 13), generator=torch.Generator().manual_seed(1))
    a2, t2, _ = msn(views, torch.ones(3, 13), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(t1, t2)  # the target never sees EHR
    assert not torch.allclose(a1, a2)  # the anchors do
    with pytest.raises(ValueError, match="EHR"):
        msn(views)


# ---------------------------------------------------------------- pretrain -> load -> encode


@pytest.mark.parametrize("method_class", [MSNMethod, MSNEHRMethod])
def test_pretrain_smoke_then_load_the_target_encoder(tmp_path, method_class):
    method = method_class()
    config = method.profiles["smoke"]
    with_ehr = method.name == "msn-ehr"
    data = training_data(16, config["image_size"], with_ehr)
    request = PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu", progress=False)
    final = method.pretrain(request)
    ckpt = load_checkpoint(final)
    assert ckpt["step"] == config["steps"] and ckpt["meta"]["card"]["name"] == method.name
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, config["steps"] + 1))
    assert all(np.isfinite(r["loss"]) for r in log)
    if with_ehr:
        ehr = ckpt["meta"]["ehr"]
        assert ehr["dim"] == 13 and ehr["groups"] == ["demographics", "scan", "inpatient"]  # default: all three
        assert ehr["images_without_ehr"] == 2 and ehr["images_used"] == 16  # imputed, counted
        assert any(k.startswith("ehr_fusion.") for k in ckpt["model"])
    else:
        assert ckpt["meta"]["ehr"] is None and not any(k.startswith("ehr_fusion.") for k in ckpt["model"])

    encoder = method.load(final, config)
    for name, tensor in encoder.backbone.state_dict().items():  # the TARGET (EMA) backbone, not the anchor
        assert torch.equal(tensor, ckpt["model"]["target_backbone." + name]), name
    assert any(not torch.equal(ckpt["model"]["target_backbone." + n], ckpt["model"]["anchor_backbone." + n])
               for n in encoder.backbone.state_dict())
    x = to_model_input(data.images[np.arange(3)], encoder.card.preprocess)
    with torch.no_grad():
        features, regions = encoder.encode_image(x), encoder.encode_image_regions(x)
    assert features.shape == (3, 192) and torch.isfinite(features).all()
    assert regions.shape[0] == 3 and regions.shape[-1] == 192 and torch.isfinite(regions).all()
    assert {"image", "image_regions", "trainable"} <= capabilities(encoder)
    assert method.pretrain(request) == final  # a finished run is reused, not repeated


def test_msn_ehr_config_keys_and_missing_ehr_columns(tmp_path):
    method = MSNEHRMethod()
    cfg = method.config({**method.profiles["smoke"], "ehr": {"groups": ["demographics"], "age_encoding": "bin5"}})
    assert cfg.ehr.groups == ("demographics",) and cfg.ehr.age_encoding == "bin5"
    with pytest.raises(ValueError, match="ehr.groups"):
        method.config({**method.profiles["smoke"], "ehr": {"groups": ["vitals"]}})
    data = training_data(8, 32, with_ehr=False)  # no MIMIC-IV joined: msn-ehr cannot run
    request = PretrainRequest(data=data, config=method.profiles["smoke"], workdir=tmp_path, seed=0, device="cpu",
                              progress=False)
    with pytest.raises(DataError, match="ehr_"):
        method.pretrain(request)


@pytest.mark.parametrize(("method", "setting", "message"), [
    ("msn", "masking=bogus", "msn: masking must be one of ['cxr-ehr-msn', 'msn', 'per-image'], got 'bogus'"),
    ("msn-ehr", "momentum_schedule=cosine", "msn: momentum_schedule must be one of ['constant', 'linear']"),
    ("msn", "weight_decay_on=biases", "msn: weight_decay_on must be one of ['all', 'weights'], got 'biases'"),
    ("msn", "momentum_final=0.5", "msn: need momentum <= momentum_final <= 1, got 0.996 / 0.5"),
])
def test_a_bad_recipe_value_is_one_cli_error_line(capsys, method, setting, message):
    from tests.corpus import cli_error

    line = cli_error(["run", "--method", method, "--task", "mock", "--profile", "smoke", "--set", setting], capsys)
    assert line.startswith(f"harness: error: {message}")


def test_profiles_have_image_size_and_seed():
    for method in (MSNMethod(), MSNEHRMethod()):
        assert set(method.profiles) == {"smoke", "small", "paper"}
        for profile in method.profiles.values():
            assert {"image_size", "seed"} <= set(profile)
        assert method.profiles["paper"]["mask_ratio"] == 0.15 and method.profiles["paper"]["num_prototypes"] == 1024
        assert method.profiles["small"]["num_prototypes"] == 64 and method.profiles["small"]["patch_size"] == 8
        # the paper profile is the released code's recipe; smoke and small keep the harness's measured choices
        paper, small = method.profiles["paper"], method.profiles["small"]
        assert (paper["train_prototypes"], paper["momentum_schedule"], paper["momentum"], paper["weight_decay_on"],
                paper["masking"]) == (False, "constant", 0.996, "all", "cxr-ehr-msn")
        assert (small["train_prototypes"], small["momentum_schedule"], small["weight_decay_on"], small["masking"]
                ) == (True, "constant", "all", "per-image")


@pytest.mark.parametrize("recipe", ["released", "original"])
def test_pretrain_applies_the_recipe_settings(tmp_path, monkeypatch, recipe):
    """pretrain wires the named settings: frozen vs trained prototypes, the decay groups, the EMA schedule."""
    from baselines.common.ema import ema_momentum
    from baselines.common.seeding import seed_all
    from baselines.msn_ehr.pretrain import build_model
    from baselines.msn_ehr.recipe import ORIGINAL_MSN

    method = MSNMethod()
    overrides = (ORIGINAL_MSN if recipe == "original" else
                 {"train_prototypes": False, "masking": "cxr-ehr-msn", "momentum_schedule": "constant"})
    config = {**method.profiles["smoke"], **overrides}
    seen: list[float] = []
    update = MSN.momentum_update_target

    def recording_update(self, momentum=None):  # the real update, with the momentum pretrain passes recorded
        seen.append(momentum)
        update(self, momentum)

    monkeypatch.setattr(MSN, "momentum_update_target", recording_update)
    data = training_data(16, config["image_size"], with_ehr=False)
    final = method.pretrain(PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu",
                                            progress=False))
    seed_all(0)
    initial = build_model(method.config(config), 0).prototypes.detach()
    trained = load_checkpoint(final)["model"]["prototypes"]
    decays = [g["weight_decay"] for g in load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["param_groups"]]
    steps = config["steps"]
    if recipe == "original":
        assert not torch.equal(trained, initial) and decays == [config["weight_decay"], 0.0]
        assert seen == [ema_momentum(i, steps, 0.996, "linear", 1.0) for i in range(steps)] and seen[-1] > 0.996
    else:
        assert torch.equal(trained, initial) and decays == [config["weight_decay"]]  # frozen; one decayed group
        assert seen == [config["momentum"]] * steps


def shallow_vit():
    # ViT-Tiny width, 2 blocks: enough to fit 8 images, fast enough for a 30-step test
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, in_chans=1, img_size=16,
                            patch_size=8, depth=2, dynamic_img_size=True)
    return VitBackbone("vit_tiny", vit, 1)


def test_loss_decreases_on_a_tiny_set():
    torch.manual_seed(0)
    msn = MSN(shallow_vit, num_prototypes=8, momentum=0.9)
    loss_fn = MSNLoss(sinkhorn_iterations=3)
    optimizer = torch.optim.AdamW([p for p in msn.parameters() if p.requires_grad], lr=1e-3)
    images = torch.randn(8, 1, 16, 16)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        noise = 0.1 * torch.randn(3, *images.shape, generator=generator)  # three "views": image + a little noise
        views = [images + noise[0], images + noise[1], images + noise[2]]
        loss, _ = loss_fn(*msn(views, generator=generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        msn.momentum_update_target()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.parametrize(("groups", "age", "dim"), [
    (["demographics"], "minmax", 3), (["demographics"], "bin5", 18), (["demographics"], "bin10", 11),
    (["scan"], "minmax", 6), (["inpatient"], "minmax", 4), (["demographics", "scan", "inpatient"], "bin10", 21),
])
def test_ehr_groups_and_age_encodings_give_the_papers_widths(groups, age, dim):
    from baselines.msn_ehr.config import EHRConfig
    from baselines.msn_ehr.pretrain import ehr_features

    features, keep, info = ehr_features(ehr_frame(12), EHRConfig(groups=tuple(groups), age_encoding=age,
                                                                 impute="mode"))
    assert features.shape == (12, dim) and info["dim"] == dim and len(keep) == 12
    # the scan group needs no MIMIC-IV subject: only the patient groups count the two images without one
    assert info["images_without_ehr"] == (0 if groups == ["scan"] else 2)


def test_images_without_ehr_are_excluded_and_counted_when_asked(tmp_path):
    method = MSNEHRMethod()
    config = {**method.profiles["smoke"], "ehr": {**method.profiles["smoke"]["ehr"], "missing": "exclude"}}
    data = training_data(16, config["image_size"], with_ehr=True)
    final = method.pretrain(PretrainRequest(data=data, config=config, workdir=tmp_path, seed=0, device="cpu",
                                            progress=False))
    meta = load_checkpoint(final)["meta"]
    assert meta["ehr"]["images_without_ehr"] == 2 and meta["ehr"]["images_excluded"] == 2
    assert meta["ehr"]["images_used"] == 14 and meta["data"]["num_images_used"] == 14
    run = json.loads((tmp_path / "run.json").read_text())  # the pretraining log records the counts too
    assert run["meta"]["ehr"]["images_excluded"] == 2
