"""One way to connect to Temporal: with the Pydantic data converter every payload needs."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from convergio.settings import Settings


async def connect_temporal(settings: Settings, address: str | None = None) -> Client:
    return await Client.connect(
        address or settings.effective_temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
