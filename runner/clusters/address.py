"""Any running Dask scheduler, by address (``--scheduler tcp://host:8786``)."""

from __future__ import annotations

from typing import Any

from ..exceptions import InfrastructureError
from .base import ClusterProvider


class AddressProvider(ClusterProvider):
    name = "address"

    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self.client = None

    def start(self) -> Any:
        from distributed import Client

        try:
            return Client(self.address, timeout=self.timeout)
        except (OSError, TimeoutError) as e:
            raise InfrastructureError(
                f"cannot reach the Dask scheduler at {self.address} ({e}); check the address and that it is running"
            ) from e

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
