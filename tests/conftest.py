import pytest

from chatforge.common import shared_data_dir


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; tests that need it skip (with the reason) when it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent (set CHATFORGE_SHARED_DATA to point at it)")
    return d
