"""Fixtures shared by the data-plane tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from tests.support import RunningGateway


@pytest.fixture
async def client(gateway: RunningGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=gateway.base_url, api_key="x", max_retries=0
    ) as sdk_client:
        yield sdk_client
