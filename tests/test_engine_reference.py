"""Same numbers before and after the engine's refactor (issue 15): the recorded runs of
``tests/reference/engine_cases.py`` reproduced by the current code.

Bitwise on a CPU of the kind that recorded them (same torch build and vector instruction set);
elsewhere float rounding may differ in the last bits, and the check is a close match instead.
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "reference"))
import engine_cases  # noqa: E402

REF = torch.load(engine_cases.REFERENCE, weights_only=True)
SAME_PLATFORM = (REF["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
                 and REF["torch"] == str(torch.__version__))


@pytest.mark.filterwarnings("ignore:.*constraint ratio is off")
@pytest.mark.parametrize("name", list(engine_cases.cases()))
def test_engine_reproduces_recorded_maps(name):
    maps = engine_cases.run(name)
    for field in engine_cases.FIELDS:
        want, got = REF[name][field], getattr(maps, field)
        if want is None:
            assert got is None, field
        elif SAME_PLATFORM:
            assert torch.equal(got, want), f"{name}.{field} differs bitwise"
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=f"{name}.{field}")
