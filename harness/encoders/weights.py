"""What a weights file really is, read from its bytes, never from its name.

A submitted ``--weights`` file is often not what its extension says: a torch zip
renamed ``.safetensors``, a safetensors file saved as ``.pt``, a Git LFS pointer
checked out without ``git lfs pull``, an HTML login page saved by a download
script, an interrupted copy. ``sniff(path)`` tells them apart from the first bytes
(and, for zips and safetensors, their directory or header) so that the error can
say what the file actually is instead of showing a safetensors or torch traceback.

Kinds (``Sniffed.kind``): ``safetensors``, ``torch-zip`` (``torch.save``),
``pickle`` (torch's legacy format or ``pickle.dump``) are loadable; everything else
(``empty``, ``safetensors-damaged``, ``zip-damaged``, ``torchscript``, ``npz``,
``zip``, ``gzip``, ``hdf5``, ``npy``, ``lfs-pointer``, ``html``, ``text``,
``unknown``) is not. ``Sniffed.what`` describes it in words that follow "the file is".
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.encoders.errors import SubmissionError

LOADABLE = ("safetensors", "torch-zip", "pickle")
SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit on the JSON header
_HEAD = 512


@dataclass(frozen=True)
class Sniffed:
    """A file's real format: ``kind`` (see the module docstring) and ``what`` ("the file is <what>")."""

    kind: str
    what: str

    @property
    def loadable(self) -> bool:
        return self.kind in LOADABLE


def _safetensors(path: Path, head: bytes, size: int) -> Sniffed | None:
    """A safetensors file (8-byte little-endian header length, then a JSON object), or None."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= SAFETENSORS_MAX_HEADER:
        return None
    if 8 + n > size:
        return Sniffed("safetensors-damaged", f"a truncated safetensors file (its {n}-byte header is cut off at "
                                              f"{size} bytes)")
    with open(path, "rb") as fh:
        fh.seek(8)
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return Sniffed("safetensors-damaged", "a damaged safetensors file (its header is not the JSON tensor index)")
    data = size - 8 - n
    if max(ends, default=0) > data:
        return Sniffed("safetensors-damaged", f"a truncated safetensors file (its header describes "
                                              f"{max(ends)} bytes of tensor data, the file holds {data})")
    return Sniffed("safetensors", "a safetensors file")


def _zip(path: Path) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return Sniffed("zip-damaged", "a truncated or damaged zip archive (a torch.save file cut off in a copy or "
                                      "download?)")
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return Sniffed("torchscript", "a TorchScript archive (torch.jit.save), whose loading would run its code")
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return Sniffed("torch-zip", "a torch.save zip archive")
    if names and all(n.endswith(".npy") for n in names):
        return Sniffed("npz", "a NumPy .npz archive, not weights")
    return Sniffed("zip", "a zip archive but not a torch.save file (no data.pkl inside)")


def _text(head: bytes) -> Sniffed | None:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # a multi-byte character cut at the end of the head is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    if any(not (c.isprintable() or c in "\t\r\n") for c in text):
        return None
    start = text.lstrip().lower()
    if start.startswith("version https://git-lfs.github.com/spec/"):
        return Sniffed("lfs-pointer", "a Git LFS pointer, not the weights themselves (fetch them with "
                                      "`git lfs pull`)")
    if start.startswith(("<!doctype html", "<html")):
        return Sniffed("html", "an HTML page, not weights (a download that returned a login or error page?)")
    return Sniffed("text", "a text file, not weights")


def sniff(path: str | Path) -> Sniffed:
    """The real format of ``path`` from its content (see the module docstring).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return Sniffed("empty", "empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    found = _safetensors(path, head, size)
    if found is not None:
        return found
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return Sniffed("pickle", "a Python pickle (torch's legacy format or pickle.dump)")
    if head.startswith(b"\x1f\x8b"):
        return Sniffed("gzip", "gzip-compressed (decompress it first)")
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Sniffed("hdf5", "an HDF5 file (Keras/TensorFlow weights?)")
    if head.startswith(b"\x93NUMPY"):
        return Sniffed("npy", "a NumPy .npy array, not weights")
    text = _text(head)
    if text is not None:
        return text
    return Sniffed("unknown", f"of no known weights format (first bytes {head[:4].hex(' ')})")


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _refuse(path: Path, what: str, hint: str = "") -> SubmissionError:
    return SubmissionError(f"weights file {path} is {what}" + (f"; {hint}" if hint else ""))


def _check_format(path: Path) -> str:
    """The loadable kind of ``path`` (``harness.encoders.weights``), or a SubmissionError saying what it is."""
    from harness.encoders.weights import sniff

    try:
        found = sniff(path)
    except OSError as exc:
        raise SubmissionError(f"weights file {path} cannot be read: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".safetensors" and not found.kind.startswith("safetensors"):
        hint = "rename it to .pt (torch files load with weights_only=True)" if found.loadable else ""
        raise _refuse(path, f"not a safetensors file: it is {found.what}", hint)
    if suffix in TORCH_SUFFIXES and found.kind == "safetensors":
        raise _refuse(path, f"a safetensors file, not the torch file its {suffix} name says",
                      f"rename it to {path.with_suffix('.safetensors').name}")
    if not found.loadable:
        other_format = found.kind in ("torchscript", "npz", "npy", "zip", "hdf5")
        raise _refuse(path, found.what, "save model.state_dict() with safetensors or torch.save" if other_format
                      else "")
    return found.kind


def load_state_dict(path: str | Path, checkpoint_key: str | None = None, key_prefix: str | None = None
                    ) -> dict[str, Any]:
    """Tensors from a safetensors file, or a torch file read weights-only (``harness.encoders.checkpoints``).

    The format is read from the content (``harness.encoders.weights.sniff``), and must agree
    with the extension: ``.safetensors`` holds safetensors, ``.pt``/``.pth``/``.bin``/``.ckpt``
    torch (other names load by content). A checkpoint's weights section (``state_dict``,
    ``model``, ``teacher``, ...; or ``checkpoint_key``) is taken, wrapper prefixes (``module.``)
    are stripped, and ``key_prefix`` keeps one sub-model.

    Raises:
        SubmissionError: one line naming the file and what it is: missing, a folder, empty,
            truncated, another format than its name says (a torch zip named ``.safetensors``,
            safetensors named ``.pt``), not weights at all (text, an HTML page, a Git LFS
            pointer, TorchScript, NumPy, HDF5, gzip), a pickle that would execute code
            (refused before any of it runs), a whole pickled model, or not a mapping of tensors.
    """
    from harness.encoders.checkpoints import read_weights

    return read_weights(path, checkpoint_key, key_prefix).tensors


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (messages of libraries can span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def shape_mismatches(state: dict[str, Any], model_state: dict[str, Any]) -> list[tuple[str, tuple, tuple]]:
    """(key, shape in the file, shape in the model) of every tensor both have, in other shapes, in model order."""
    return [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in model_state.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)]


def describe_mismatches(mismatched: list[tuple[str, tuple, tuple]], show: int = 3) -> str:
    """One line listing the first mismatched keys with both shapes, and the channel count when that is why."""
    parts = [f"{k} is {f} in the file, {m} in the model" for k, f, m in mismatched[:show]]
    more = f" (and {len(mismatched) - show} more)" if len(mismatched) > show else ""
    text = f"{len(mismatched)} tensor(s) of another shape: " + "; ".join(parts) + more
    channels = next(((f[1], m[1]) for _, f, m in mismatched if len(f) == 4 and len(m) == 4 and f[0] == m[0]
                     and f[2:] == m[2:] and f[1] != m[1] and {f[1], m[1]} <= {1, 3}), None)
    if channels is not None:  # the classic: grey (1-channel) weights for a 3-channel model, or the reverse
        text += f"; the weights take {channels[0]}-channel images, the model {channels[1]}-channel"
    return text
