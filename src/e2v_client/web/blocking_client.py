"""Emotion2vecClient for synchronous callers: Gradio runs the page's callbacks in worker threads, not coroutines.

The asyncio client and its gRPC channels belong to one event loop, so that loop runs for the life of the page
on a daemon thread of its own, and each call hands it a coroutine and waits for the answer.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

from e2v_client.client import Emotion2vecClient, ModelInfo, RetryPolicy


class BlockingClient:
    """One Emotion2vecClient on an event loop of its own (a daemon thread), called from any thread.

    ssl, root_cert and token are Emotion2vecClient's (the gateway: TLS and the bearer token); the token is handed
    on and not kept here.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 120.0,
        retries: int = 2,
        *,
        ssl: bool = False,
        root_cert: str | Path | None = None,
        token: str | None = None,
    ):
        self.url = url
        self.timeout = timeout
        self.retries = retries
        retry = RetryPolicy(attempts=retries + 1)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="e2v-web-grpc", daemon=True).start()
        try:
            self.async_client: Emotion2vecClient = self.call(
                self._make(url, timeout=timeout, retry=retry, ssl=ssl, root_cert=root_cert, token=token)
            )
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise

    @staticmethod
    async def _make(url: str, **options) -> Emotion2vecClient:  # made on the loop, so its channels belong to it
        return Emotion2vecClient(url, **options)

    def call(self, coroutine):
        """Run a coroutine on the client's loop and wait for its result (or exception)."""
        return self.submit(coroutine).result()

    def submit(self, coroutine) -> Future:
        """Start a coroutine on the client's loop, for work that outlives one call (a live recording): its future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def connect(self) -> ModelInfo:
        """The model's identity (the client's channels reconnect quickly after a server restart)."""
        return self.call(self.async_client.connect())

    def close(self) -> None:
        try:
            self.call(self.async_client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
