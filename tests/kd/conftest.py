"""Fixtures of the kd tests."""

import pytest
from lhotse.features.io import close_cached_file_handles


@pytest.fixture(autouse=True)
def fresh_h5_handles():
    close_cached_file_handles()  # lhotse keeps read handles open per path; files here are rewritten
    yield
    close_cached_file_handles()
