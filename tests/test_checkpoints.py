"""Checkpoint formats of other codebases, read weights-only: nested sections, prefixes, Lightning and DINO
checkpoints, whole pickled models (refused, or converted with ``harness convert-weights``), and the
restricted unpickler's promise that nothing named in a file is imported or run."""

from __future__ import annotations

import pickle
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from harness.cli import main
from harness.encoders.checkpoints import read_weights
from harness.encoders.errors import SubmissionError
from harness.encoders.public import public_encoder
from harness.encoders.public.options import RouteOptions
from harness.encoders.unpickle import module_state, restricted_load
from tests import public_formats as F
from tests.corpus import cli_error


@pytest.fixture(scope="module")
def vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=0).eval()


def _same(state: dict, reference: dict) -> bool:
    return state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in reference)


@pytest.mark.parametrize("layout, key", [
    ({"model": "S", "optimizer": {"state": {}}, "epoch": 3}, None),  # timm / DeiT / MAE
    ({"state_dict": "S", "epoch": 3}, None),  # MoCo, Lightning
    ({"teacher": "S", "student": "X"}, None),  # DINO: the teacher is what DINO evaluates
    ({"encoder": "S"}, None),
    ({"ema": {"model": "S"}, "model": "X"}, "ema.model"),  # a dotted --checkpoint-key
    ({"module.": "S"}, None),  # DDP-wrapped keys
])
def test_nested_sections_and_wrappers(layout, key, vit, tmp_path):
    state = vit.state_dict()
    other = {k: v + 1 for k, v in state.items()}

    def fill(obj):
        if obj == "S":
            return dict(state)
        if obj == "X":
            return other
        return {k: fill(v) for k, v in obj.items()} if isinstance(obj, dict) else obj

    ckpt = fill(layout)
    if "module." in ckpt:
        ckpt = {f"module.{k}": v for k, v in state.items()}
    torch.save(ckpt, tmp_path / "c.pt")
    assert _same(read_weights(tmp_path / "c.pt", checkpoint_key=key).tensors, state)


def test_lightning_checkpoint_reads_weights_only(vit, tmp_path, capsys):
    path = F.lightning_checkpoint(tmp_path, vit.state_dict())
    with pytest.raises(pickle.UnpicklingError):  # torch's weights-only loader refuses the whole file ...
        torch.load(path, weights_only=True)
    loaded = read_weights(path)  # ... the harness reads its weights, the AttributeDict stays inert
    assert "ignored 1 pickled object type(s) outside the weights (tests.public_formats.AttributeDict)" in loaded.notes
    enc = public_encoder("timm:test_vit", RouteOptions(weights=str(path)))
    assert "keys under 'model.' (the one sub-model that fits)" in enc.card.notes
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(enc.encode_image(x), vit(x))


def test_dino_checkpoint_teacher_backbone(vit, tmp_path):
    path = F.dino_checkpoint(tmp_path, vit.state_dict())
    enc = public_encoder("timm:test_vit", RouteOptions(weights=str(path)))  # section teacher, prefix backbone.
    assert "section 'teacher'" in enc.card.notes and "keys under 'backbone.'" in enc.card.notes
    explicit = public_encoder("timm:test_vit", RouteOptions(weights=str(path), checkpoint_key="student",
                                                            key_prefix="module.backbone."))
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(enc.encode_image(x), vit(x)) and not torch.equal(explicit.encode_image(x), vit(x))


def test_a_refusal_lists_missing_and_unexpected_keys(vit, tmp_path, capsys):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    del state["norm.weight"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "w.safetensors"))
    line = cli_error(["submit", "timm:test_vit", "--weights", str(tmp_path / "w.safetensors"), "--name", "missing-keys",
                      "--tasks", "mock"], capsys)
    assert line == (f"harness: error: {tmp_path / 'w.safetensors'}: does not fit timm:test_vit: 1 key(s) missing "
                    "['norm.weight'], 1 unexpected ['extra.weight']")


def test_checkpoint_key_and_prefix_errors_name_what_is_there(vit, tmp_path, capsys):
    torch.save({"model": vit.state_dict(), "epoch": 1}, tmp_path / "c.pt")
    line = cli_error(["submit", "timm:test_vit", "--weights", str(tmp_path / "c.pt"), "--checkpoint-key", "teacher",
                      "--name", "no-section", "--tasks", "mock"], capsys)
    assert line == (f"harness: error: {tmp_path / 'c.pt'}: --checkpoint-key 'teacher': no section 'teacher' there "
                    "(sections: ['model', 'epoch'])")
    line = cli_error(["submit", "timm:test_vit", "--weights", str(tmp_path / "c.pt"), "--key-prefix",
                      "module.encoder_q.", "--name", "no-prefix", "--tasks", "mock"], capsys)
    assert line == (f"harness: error: {tmp_path / 'c.pt'}: --key-prefix 'module.encoder_q.': no key starts with it "
                    "(keys start with ['cls_token', 'pos_embed', 'patch_embed.proj.', 'blocks.', 'norm.'])")


# ------------------------------------------------------------------------------------------ pickled models


def test_whole_pickled_model_is_refused_with_the_convert_command(vit, tmp_path, capsys):
    torch.save(vit, tmp_path / "vit.pt")
    line = cli_error(["submit", "timm:test_vit", "--weights", str(tmp_path / "vit.pt"), "--name", "pickled-vit",
                      "--tasks", "mock"], capsys)
    assert line == (f"harness: error: {tmp_path / 'vit.pt'}: refused: not a plain tensor file: it pickles "
                    "timm.models.vision_transformer.VisionTransformer, so loading it would execute code (a whole "
                    f"pickled model?); convert it once with `harness convert-weights {tmp_path / 'vit.pt'} --out "
                    "vit.safetensors` (reads its tensors without running its code) and submit that file")


@pytest.mark.parametrize("legacy", [False, True])
def test_convert_weights_writes_the_module_trees_tensors(legacy, vit, tmp_path, capsys):
    src = tmp_path / "vit.pt"
    torch.save(vit, src, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "vit.safetensors"
    assert main(["convert-weights", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: {len(vit.state_dict())} tensors" in printed and "none of its code ran" in printed
    assert _same(load_file(str(out)), vit.state_dict())
    enc = public_encoder("timm:test_vit", RouteOptions(weights=str(out)))
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(enc.encode_image(x), vit(x))


def test_convert_weights_of_a_checkpoint_section_and_prefix(vit, tmp_path, capsys):
    path = F.dino_checkpoint(tmp_path, vit.state_dict())
    out = tmp_path / "teacher.safetensors"
    assert main(["convert-weights", str(path), "--checkpoint-key", "teacher", "--key-prefix", "backbone.", "--out",
                 str(out)]) == 0
    assert _same(load_file(str(out)), vit.state_dict())
    line = cli_error(["convert-weights", str(path), "--out", str(tmp_path / "t.pt")], capsys)
    assert line == f"harness: error: convert-weights: --out {tmp_path / 't.pt'} must end in .safetensors"


def test_xrv_pickle_outside_the_allowlist_is_refused(tmp_path, capsys):
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=None)
    model.features.add_module("extra", F.ExtraBlock())
    torch.save(model, tmp_path / "xrv-extra.pt")
    line = cli_error(["submit", "xrv:densenet121-res224-all", "--weights", str(tmp_path / "xrv-extra.pt"), "--name",
                      "xrv-extra", "--tasks", "mock"], capsys)
    assert line.startswith(f"harness: error: {tmp_path / 'xrv-extra.pt'}: refused: a whole pickled model naming 1 "
                           "class(es) outside the allowlist of this route (tests.public_formats.ExtraBlock); convert "
                           "it once with `harness convert-weights")


def test_restricted_unpickler_imports_and_runs_nothing(tmp_path, monkeypatch):
    """A pickle naming a module whose import has a side effect, and a payload calling a builtin."""
    marker = tmp_path / "imported"
    (tmp_path / "sideeffect_mod.py").write_text(textwrap.dedent(f"""
        open({str(marker)!r}, "w").write("imported")

        class Thing:
            def __init__(self, *args):
                open({str(marker)!r}, "w").write("built")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("sideeffect_mod", None)
    pwned = tmp_path / "pwned"

    def text(value: str) -> bytes:  # BINUNICODE
        return b"X" + len(value.encode()).to_bytes(4, "little") + value.encode()

    # {"thing": sideeffect_mod.Thing(), "cmd": os.system("touch pwned")}, written opcode by opcode: pickling it
    # for real would import the module here
    stream = (b"\x80\x02}(" + text("thing") + b"csideeffect_mod\nThing\n)\x81" + text("cmd") + b"cos\nsystem\n"
              + text(f"touch {pwned}") + b"\x85Ru.")
    path = tmp_path / "evil.pt"
    path.write_bytes(stream)
    obj, seen = restricted_load(str(path))
    assert seen == ["sideeffect_mod.Thing", "os.system"]
    assert not marker.exists() and "sideeffect_mod" not in sys.modules and not pwned.exists()
    assert module_state(obj) is None
    with pytest.raises(SubmissionError, match="refused: not a plain tensor file: it pickles sideeffect_mod.Thing"):
        read_weights(path)
