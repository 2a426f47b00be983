"""Runs model versions on a named, sized thread pool so the event loop never waits on a model."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from canarygate.runtime.model import ModelVersion


class Runner:
    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="canarygate-infer")

    async def run(
        self, version: ModelVersion, feeds: dict[str, np.ndarray], names: tuple[str, ...]
    ) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, version.run, feeds, names)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
