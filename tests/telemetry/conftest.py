from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests here (``pytestmark = pytest.mark.anyio``) run on asyncio only."""
    return "asyncio"
