"""Test-wide setup: an isolated harness cache per test session (removed at its end), one thread per op."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Isolate every cache (images, features, pretraining, synthetic world, mock data) from the
# user's ~/.cache/harness. Set before any harness module reads it.
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="harness-test-cache-"))
os.environ["HARNESS_CACHE"] = str(_SESSION_CACHE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="module", autouse=True)
def _submissions_stay_in_their_module():
    """``harness submit`` adds the submitted encoder to METHODS for the rest of its process; a test
    module calling ``main(["submit", ...])`` in-process would leave its names (``moco-r18``) to the
    next module, which a user's separate processes never see. Restore the registry after each module."""
    from harness.catalog import METHODS
    from harness.encoders import submission

    objects, lazy, submitted = dict(METHODS._objects), dict(METHODS._lazy), dict(submission._SUBMITTED)
    yield
    for saved, live in ((objects, METHODS._objects), (lazy, METHODS._lazy), (submitted, submission._SUBMITTED)):
        live.clear()
        live.update(saved)


@pytest.fixture(scope="session")
def session_cache() -> Path:
    return _SESSION_CACHE


@pytest.fixture(scope="session")
def corpus_world(tmp_path_factory) -> Path:
    """The bad-input corpus's small synthetic world (scale 0.05, seed 1): damaged only in copies."""
    from harness.synth import write_world

    root = tmp_path_factory.mktemp("bad-inputs-world")
    write_world(root, scale=0.05, seed=1, progress=False)
    return root


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's cache (about 1.5 GB after a full run): every run used to leave one in /tmp.
    ``HARNESS_KEEP_TEST_CACHE=1`` keeps it for a post-mortem; its path is printed then."""
    if os.environ.get("HARNESS_KEEP_TEST_CACHE") == "1":
        print(f"\nharness test cache kept: {_SESSION_CACHE}")
    else:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
