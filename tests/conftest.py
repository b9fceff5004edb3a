import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline copy of the real data sets (``$DEEPINFO_DATA`` or ``../shared/data``)."""
    env = os.environ.get("DEEPINFO_DATA")
    path = Path(env) if env else SHARED_DATA
    if not path.is_dir():
        pytest.skip(f"real data not available: set DEEPINFO_DATA or provide {SHARED_DATA}")
    return path
