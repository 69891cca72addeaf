"""The tiny official-format fixtures the CLI fault tests run (skipped where shared/fixtures is absent)."""
import pytest

from tests.conftest import FIXTURES

RSD = FIXTURES / "rsd_student_tiny" / "state_dict.pth"
VQ = FIXTURES / "vq_tiny" / "state_dict.pth"


@pytest.fixture(autouse=True)
def _need_tiny_fixtures():
    for p in (RSD, VQ):
        if not p.is_file():
            pytest.skip(f"fixture {p} is absent")
