"""Where each dataset's files are: a user data root, per-source overrides, or the synthetic world.

Resolution order (first that applies):

1. ``resolve_data_root(DIR)`` (the CLI's ``--data-root DIR``), else ``$HARNESS_DATA_ROOT``:
   sources are ``DIR/<source>`` in their ORIGINAL layouts (``docs/datasets.md``);
2. per-source overrides, ``source_overrides={"chexpert": PATH}`` or
   ``$HARNESS_ROOT_<SOURCE>`` (``HARNESS_ROOT_MIMIC_CXR_JPG``, ``HARNESS_ROOT_NIH14`` ...),
   replace single sources on top of (1) (or stand alone);
3. neither: the default synthetic world in
   ``$HARNESS_CACHE/synth/v<generator>-s<seed>-x<scale>/`` (``HARNESS_CACHE`` defaults to
   ``~/.cache/harness``; scale from ``$HARNESS_SYNTH_SCALE``, default
   ``harness.synth.DEFAULT_SCALE``), generated source by source on first use: a run asks for
   the datasets its task reads (``datasets=("mimic-cxr",)`` writes the MIMIC part only), and
   each missing source is written into a temporary folder under a file lock, then moved in
   with its marker entry (``harness.synth.add_sources``), so no reader sees half a source and
   concurrent first uses write it once. Its calibration is ``spec`` whatever is installed;
   ``HARNESS_SYNTH_CALIBRATION=torchxrayvision`` asks for the other one, which lives in its
   own folder (``...-torchxrayvision-<digest of its files>``).

A root is ``synthetic`` iff it holds ``HARNESS_SYNTHETIC.json``; real and
synthetic sources are never mixed in one resolution (that would mix results).

Adapters read ``<root>/<source>``; with overrides, ``DataRoot.path`` is a small
folder of symbolic links (``$HARNESS_CACHE/roots/<hash>/<source> -> folder``), so
every adapter sees one root whichever way the sources were given. Dataset names
work as source names too: ``source_present("mimic-cxr")`` asks for the dataset,
i.e. the MIMIC-CXR-JPG tree (``sources["mimic-cxr"]`` stays the reports folder), and
``source_present("hf/<name>")`` for one Hugging Face-format collection under ``hf/``
(``HARNESS_ROOT_HF`` points at a folder of collections).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.schema import DataError, DataSource
from harness.storage import cache_root, file_lock

# "hf": the folder of Hugging Face-format collections, one subfolder each (dataset hf/<name>)
SOURCES = ("mimic-cxr-jpg", "mimic-cxr", "mimiciv", "chexpert", "nih14", "openi", "hf")
ENV_DATA_ROOT = "HARNESS_DATA_ROOT"
ENV_SYNTH_SCALE = "HARNESS_SYNTH_SCALE"
MARKER = "HARNESS_SYNTHETIC.json"
DATASET_FOLDER = {"mimic-cxr": "mimic-cxr-jpg"}  # dataset (adapter) name -> the folder it needs
# dataset (adapter) name -> the synthetic world's source that writes it (others: none)
SYNTH_SOURCE = {"mimic-cxr": "mimic", "chexpert": "chexpert", "nih14": "nih14", "openi": "openi"}


def source_env_var(source: str) -> str:
    """``mimic-cxr-jpg`` -> ``HARNESS_ROOT_MIMIC_CXR_JPG``."""
    return "HARNESS_ROOT_" + source.upper().replace("-", "_")


@dataclass(frozen=True)
class DataRoot:
    """The resolved data location.

    Attributes:
        path: the data root (``None`` when only per-source overrides were given).
        data_source: ``synthetic`` iff the root (or every override's parent) holds the marker.
        sources: source name -> folder (present or not; see ``source_present``).
    """

    path: Path | None
    data_source: DataSource
    sources: dict[str, Path] = field(default_factory=dict)

    def source_present(self, name: str) -> bool:
        """Whether source (or dataset) ``name`` has a non-empty folder (``hf/<name>``: that collection's)."""
        source, _, collection = name.partition("/")
        if source == "hf" and collection:
            folder = self.sources.get(source)
            return folder is not None and (folder / collection).is_dir() and any((folder / collection).iterdir())
        folder = self.sources.get(DATASET_FOLDER.get(name, name))
        return folder is not None and folder.is_dir() and any(folder.iterdir())

    def source_path(self, name: str) -> Path:
        """The folder of ``name``; a DataError that says how to provide it when absent."""
        name = DATASET_FOLDER.get(name, name)
        if name not in SOURCES:
            raise DataError(f"unknown data source {name!r}; known: {', '.join(SOURCES)}")
        if not self.source_present(name):
            raise DataError(f"data source {name!r} not found at {self.sources.get(name)}: put it at "
                            f"<data root>/{name} or set {source_env_var(name)}")
        return self.sources[name]


def _kind(folder: Path) -> DataSource:
    return "synthetic" if (folder / MARKER).is_file() else "real"


def _overrides(given: Mapping[str, str | Path] | None, environ: Mapping[str, str]) -> dict[str, Path]:
    out = {s: Path(environ[source_env_var(s)]).expanduser() for s in SOURCES if environ.get(source_env_var(s))}
    for name, path in (given or {}).items():
        if name not in SOURCES:
            raise DataError(f"source_overrides: unknown source {name!r}; known: {', '.join(SOURCES)}")
        out[name] = Path(path).expanduser()
    return out


def resolve_data_root(data_root: str | Path | None, *, source_overrides: Mapping[str, str | Path] | None = None,
                      synth_seed: int = 0, synth_scale: float | None = None,
                      environ: Mapping[str, str] | None = None, datasets: Sequence[str] | None = None) -> DataRoot:
    """Resolve the data root (see the module docstring for the order).

    ``datasets``: the datasets the caller will read; on the default synthetic world only their
    sources are generated (``None``: every source).

    Raises:
        DataError: a given root or override folder does not exist, an unknown override
            name, or real and synthetic sources mixed.
    """
    environ = os.environ if environ is None else environ
    overrides = _overrides(source_overrides, environ)
    raw = data_root if data_root not in (None, "") else environ.get(ENV_DATA_ROOT) or None
    root = Path(raw).expanduser() if raw else None
    if root is None and not overrides:
        root = default_synthetic_root(seed=synth_seed, scale=synth_scale, environ=environ,
                                      sources=None if datasets is None else synth_sources(datasets))
    if root is not None and not root.is_dir():
        raise DataError(f"data root {root} is not a folder (from --data-root or ${ENV_DATA_ROOT})")
    for name, folder in overrides.items():
        if not folder.is_dir():
            raise DataError(f"{source_env_var(name)} / source_overrides[{name!r}]: {folder} is not a folder")
    sources = {name: root / name for name in SOURCES} if root is not None else {}
    sources.update(overrides)
    kinds = {_kind(root)} if root is not None else set()
    kinds |= {_kind(folder.parent) for folder in overrides.values()}
    if len(kinds) > 1:
        raise DataError("real and synthetic data sources mixed (a root or override holds "
                        f"{MARKER} and another does not): results must not mix them")
    kind = kinds.pop()
    if overrides:
        candidates = [root, *(folder.parent for folder in overrides.values())]
        marker = next((d / MARKER for d in candidates if d is not None and (d / MARKER).is_file()), None)
        root = _link_farm(sources, marker, environ)
    return DataRoot(root, kind, sources)


def _link_farm(sources: dict[str, Path], marker: Path | None, environ: Mapping[str, str]) -> Path:
    """A root whose ``<source>`` entries link to the resolved folders (adapters take one root)."""
    resolved = {name: folder.resolve() for name, folder in sorted(sources.items()) if folder.exists()}
    key = hashlib.sha256(repr(sorted((k, str(v)) for k, v in resolved.items())).encode()).hexdigest()[:16]
    farm = cache_root(environ) / "roots" / key
    farm.mkdir(parents=True, exist_ok=True)
    for name, target in resolved.items():
        link = farm / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = farm / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)  # atomic: concurrent resolutions agree
    if marker is not None:
        shutil.copyfile(marker, farm / MARKER)
    else:
        (farm / MARKER).unlink(missing_ok=True)
    return farm


def _calibration(calibration: str | None, environ: Mapping[str, str]) -> str:
    """The default world's calibration: the argument, else ``$HARNESS_SYNTH_CALIBRATION``, else ``spec``."""
    from harness.synth.calibration import ENV_CALIBRATION, CalibrationError, check_calibration

    where = "calibration" if calibration else f"${ENV_CALIBRATION}"
    try:
        return check_calibration(calibration or environ.get(ENV_CALIBRATION) or "spec", where)
    except CalibrationError as exc:
        raise DataError(str(exc)) from None


def synthetic_cache_dir(seed: int, scale: float, environ: Mapping[str, str] | None = None,
                        calibration: str | None = None) -> Path:
    """The default world's folder: ``$HARNESS_CACHE/synth/v<generator>-s<seed>-x<scale>[-<calibration>-<digest>]``.

    Args:
        seed: world seed.
        scale: world scale.
        environ: where ``HARNESS_CACHE`` and ``HARNESS_SYNTH_CALIBRATION`` are read (default ``os.environ``).
        calibration: ``spec`` or ``torchxrayvision``; default: ``$HARNESS_SYNTH_CALIBRATION``, else ``spec``.

    Returns:
        The folder (not created). A non-spec calibration gets its own folder, named with the
        digest of the files it reads, so it never shares one with the spec world or another release.

    Raises:
        DataError: an unknown calibration, or torchxrayvision (or its metadata) missing.
    """
    from harness.synth.calibration import CalibrationError, calibration_sha256
    from harness.synth.world import GENERATOR_VERSION

    environ = os.environ if environ is None else environ
    cache = cache_root(environ)
    calibration = _calibration(calibration, environ)
    try:
        digest = calibration_sha256(calibration)
    except CalibrationError as exc:
        raise DataError(str(exc)) from None
    tag = "" if digest is None else f"-{calibration}-{digest[:12]}"
    return cache / "synth" / f"v{GENERATOR_VERSION}-s{seed}-x{scale:g}{tag}"


def synth_sources(datasets: Sequence[str]) -> tuple[str, ...]:
    """The synthetic world's sources that hold ``datasets`` (``mimic-cxr`` -> ``mimic``; ``mock``, ``hf/...``: none)."""
    from harness.synth import SOURCES as SYNTH_SOURCES

    wanted = {SYNTH_SOURCE[d] for d in datasets if d in SYNTH_SOURCE}
    return tuple(s for s in SYNTH_SOURCES if s in wanted)


def _scale(environ: Mapping[str, str]) -> float:
    from harness.synth import DEFAULT_SCALE

    given = environ.get(ENV_SYNTH_SCALE) or ""
    try:
        return float(given) if given.strip() else DEFAULT_SCALE
    except ValueError:
        raise DataError(f"${ENV_SYNTH_SCALE} must be a number (the synthetic world's scale), got {given!r}") from None


def default_synthetic_root(*, seed: int = 0, scale: float | None = None, progress: bool = True,
                           environ: Mapping[str, str] | None = None, calibration: str | None = None,
                           sources: Sequence[str] | None = None) -> Path:
    """The cached synthetic world for (generator version, seed, scale, calibration), holding ``sources``.

    Sources it lacks are generated now (``None``: every source), each once, under the world's
    lock: into a temporary folder, then moved in (``harness.synth.add_sources``); an empty
    ``sources`` still writes the marker. ``calibration`` defaults to ``$HARNESS_SYNTH_CALIBRATION``,
    else ``spec`` (never to what is installed); see ``synthetic_cache_dir`` for the folder and the errors.
    """
    from harness.synth import SOURCES as SYNTH_SOURCES
    from harness.synth import add_sources, world_sources, write_world

    environ = os.environ if environ is None else environ
    scale = _scale(environ) if scale is None else scale
    calibration = _calibration(calibration, environ)
    final = synthetic_cache_dir(seed, scale, environ, calibration)
    wanted = tuple(SYNTH_SOURCES if sources is None else sources)

    def missing() -> list[str]:
        have = world_sources(final) if (final / MARKER).is_file() else None
        return list(wanted) if have is None else [s for s in wanted if s not in have]

    if (final / MARKER).is_file() and not missing():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        todo = missing()  # another process may have written some while we waited
        if (final / MARKER).is_file() and not todo:
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            write_world(tmp, sources=todo, seed=seed, scale=scale, progress=progress, calibration=calibration)
            if (final / MARKER).is_file():
                add_sources(tmp, final)
            else:
                if final.exists():  # a folder without marker: an interrupted older layout
                    shutil.rmtree(final)
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
