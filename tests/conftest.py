"""Shared fixtures.

Real evaluation data lives in ``../shared/data`` beside the repository (research-use terms, not copied into
the repo); tests that need it skip cleanly when it is absent. The real MobileSAM checkpoint is obtained by
anymask's own weights manager (cache: ``$ANYMASK_HOME``, default ``~/.cache/anymask``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.datasets import SHARED_DATA, load_mask, read_index  # noqa: E402,F401 (re-exported to tests)

# The default backend is onnxruntime (anymask.runtime); the suite tests the exact float32 PyTorch path unless a
# test asks for another backend (tests/test_runtime.py does, and tests the default). Several tests replace the
# torch encoder with a stub, which only the torch backend sees.
os.environ.setdefault("ANYMASK_BACKEND", "torch")

EXAMPLE_IMAGE = REPO_ROOT / "examples" / "astronaut.png"


@pytest.fixture(scope="session")
def example_image_path() -> Path:
    """The public-domain astronaut photo shipped with the repo (512x512 RGB)."""
    return EXAMPLE_IMAGE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test when it is not there (a user's checkout has none)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_instances(shared_data: Path) -> list[dict]:
    """12 real images with one ground-truth object each: 5 GrabCut, 4 Berkeley, 3 DAVIS frames."""
    picked = read_index(shared_data / "grabcut")[::10][:5]
    picked += read_index(shared_data / "berkeley")[::25][:4]
    davis = read_index(shared_data / "davis2016_val")
    picked += [davis[0], davis[len(davis) // 2], davis[-1]]
    return picked


@pytest.fixture(scope="session")
def mobile_sam_checkpoint() -> Path:
    from anymask import weights

    return weights.resolve("mobile_sam")


@pytest.fixture(scope="session")
def lite_medsam_checkpoint() -> Path:
    from anymask import weights

    return weights.resolve("lite_medsam")


@pytest.fixture(scope="session")
def mobile_sam(mobile_sam_checkpoint: Path):
    from anymask import load_model

    return load_model("mobile_sam", checkpoint=mobile_sam_checkpoint)


@pytest.fixture(scope="session")
def predictor(mobile_sam):
    """A MobileSAM predictor with the astronaut photo already set (shared: do not change its image)."""
    from anymask import Predictor

    p = Predictor(mobile_sam)
    p.set_image(EXAMPLE_IMAGE)
    return p
