"""Feature extraction cache (hit, corruption, resume) and the weights hash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_classification_support import SIZE, TinyEncoder, context, task_data

from harness.features import (
    EncoderChangedError,
    assert_unchanged,
    compute_features,
    extract_features,
    split_cache_key,
    weights_sha256,
)


class CountingEncoder(TinyEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().encode_image(images)


def _extract(encoder, data, tmp_path, **kw):
    key = split_cache_key(context(data, encoder, tmp_path), "train")
    return extract_features(encoder, data.train.images, encoder.card.preprocess, batch_size=16,
                            cache_key=key, cache_root=tmp_path / "feat", progress=False, **kw)


def test_cache_hit_on_second_call_and_same_values(tmp_path):
    data, enc = task_data(), CountingEncoder()
    first = _extract(enc, data, tmp_path)
    calls = enc.calls
    second = _extract(enc, data, tmp_path)
    assert enc.calls == calls  # no encoder call: loaded from disk
    assert first.dtype == np.float32 and first.shape == (len(data.train), enc.num_features)
    np.testing.assert_array_equal(first, second)
    header = json.loads(next((tmp_path / "feat").glob("*.json")).read_text())
    assert header["shape"] == list(first.shape) and header["key"]["kind"] == "global"


def test_features_equal_direct_encoding_without_drop_last(tmp_path):
    data, enc = task_data(), TinyEncoder()
    feats = _extract(enc, data, tmp_path)  # batch 16 does not divide N: the last partial batch is kept
    assert len(data.train) % 16 != 0
    from harness.encoders.preprocess import to_model_input

    enc.eval()
    with torch.no_grad():
        direct = enc.encode_image(to_model_input(data.train.images[np.arange(len(data.train))],
                                                 enc.card.preprocess)).numpy()
    np.testing.assert_allclose(feats, direct, atol=1e-5)


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_corrupted_cache_is_rebuilt(tmp_path, damage):
    data, enc = task_data(), CountingEncoder()
    good = _extract(enc, data, tmp_path)
    npy = next((tmp_path / "feat").glob("*.npy"))
    if damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:200])
    elif damage == "flip":
        raw = bytearray(npy.read_bytes())
        raw[-5] ^= 0xFF
        npy.write_bytes(bytes(raw))
    else:
        npy.with_suffix(".json").write_text("{not json")
    calls = enc.calls
    with pytest.warns(UserWarning, match="rebuilding"):
        again = _extract(enc, data, tmp_path)
    assert enc.calls > calls
    np.testing.assert_array_equal(good, again)


def test_key_changes_with_weights_kind_and_rows(tmp_path):
    data = task_data()
    a, b = TinyEncoder(seed=0), CountingEncoder()
    with torch.no_grad():
        b.body[0].weight.add_(1.0)
    assert weights_sha256(a) != weights_sha256(b)
    _extract(a, data, tmp_path)
    _extract(b, data, tmp_path)  # other weights: a new entry, computed
    assert b.calls > 0
    assert len(list((tmp_path / "feat").glob("*.npy"))) == 2
    with pytest.raises(ValueError, match="weights_sha256"):
        extract_features(a, data.train.images, a.card.preprocess, cache_key={"split": "train"},
                         cache_root=tmp_path)


def test_resume_reuses_finished_chunks(tmp_path):
    data, enc = task_data(), CountingEncoder()
    partial = tmp_path / "partial"
    partial.mkdir()
    full = compute_features(enc, data.train.images, enc.card.preprocess, batch_size=8, progress=False,
                            partial_dir=partial, chunk_rows=16)
    n_chunks = len(list(partial.glob("chunk-*.npy")))
    assert n_chunks == -(-len(data.train) // 16)
    (partial / f"chunk-{n_chunks - 1:06d}.npy").unlink()  # as if killed during the last chunk
    calls = enc.calls
    again = compute_features(enc, data.train.images, enc.card.preprocess, batch_size=8, progress=False,
                             partial_dir=partial, chunk_rows=16)
    assert enc.calls - calls == -(-(len(data.train) - 16 * (n_chunks - 1)) // 8)  # only the last chunk
    np.testing.assert_array_equal(full, again)


def test_extraction_restores_train_mode_and_leaves_weights_alone(tmp_path):
    data, enc = task_data(), TinyEncoder()
    enc.train()
    sha = weights_sha256(enc)
    _extract(enc, data, tmp_path)
    assert enc.training
    assert_unchanged(enc, sha)  # BatchNorm running stats untouched: eval mode during extraction
    enc.body(torch.rand(2, 1, SIZE, SIZE))  # a train-mode forward updates BatchNorm statistics
    with pytest.raises(EncoderChangedError):
        assert_unchanged(enc, sha)


def test_weights_sha256_for_non_modules():
    class Exposes:
        weights_sha256 = "abc123"

    class StateDict:
        def state_dict(self):
            return {"w": np.arange(3.0)}

    assert weights_sha256(Exposes()) == "abc123"
    assert len(weights_sha256(StateDict())) == 64
    with pytest.raises(TypeError, match="cannot hash"):
        weights_sha256(object())


class RegionTiny(TinyEncoder):
    region_grid = (2, 2)

    def encode_image_regions(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.body[:-2](images)  # (B, 16, S, S)
        return torch.nn.functional.adaptive_avg_pool2d(maps, 2).flatten(2).transpose(1, 2)  # (B, 4, 16)


def test_region_features_are_cached_separately(tmp_path):
    data, enc = task_data(), RegionTiny()
    regions = _extract(enc, data, tmp_path, kind="regions")
    assert regions.shape == (len(data.train), 4, 16)
    assert _extract(enc, data, tmp_path).shape == (len(data.train), 64)  # another key: global
    with pytest.raises(ValueError, match="kind"):
        _extract(enc, data, tmp_path, kind="tokens")


def test_wrong_output_shape_is_an_error(tmp_path):
    class Bad(TinyEncoder):
        def encode_image(self, images):
            return super().encode_image(images)[:1]

    with pytest.raises(ValueError, match="returned shape"):
        _extract(Bad(), task_data(), tmp_path)
