"""OpenAI-compatible servers: one client, one retry policy, and URLs that carry no secret.

Both the LLM judge (``judge/llm.py``) and the ``openai`` generation backend
(``generate/openai_backend.py``) talk to such servers (vLLM, llama.cpp's server, a hosted API) through
the ``openai`` package. What they share lives here, so a retry, a timeout or a leaked credential is
handled the same way by both:

- the SDK's own retries are off and :func:`call_with_retries` retries transport errors and 5xx/408/409/429
  answers with exponential backoff, while any other 4xx (bad model name, bad key) fails at once;
- :func:`public_url` is the only form of a base URL that is stored or printed: a key written into the
  URL (``http://user:KEY@host/v1``, ``?api_key=KEY``) never reaches a file or a log;
- :func:`wait_until_ready` polls ``GET {base_url}/models`` (every OpenAI-compatible server has it) until
  the server answers, for a server we started ourselves.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import UserError

T = TypeVar("T")
RETRYABLE_4XX = (408, 409, 429)
def public_url(url: str) -> str:
    """``url`` without the credentials a user may have written into it (user info, key parameters),
    and those credentials registered so no later text can carry them (:mod:`lookahead_tuning.redact`)."""
    from .redact import register_url

    return register_url(url) or url


def check_base_url(url: str | None, flag: str) -> str:
    """A usable base URL (``http(s)://host[:port]/v1``), or a one-line error naming ``flag``."""
    if not url:
        raise UserError(f"{flag} is required (an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{flag} must be an http(s) URL such as http://127.0.0.1:8000/v1, got {public_url(url)!r}")
    return url.rstrip("/")


def read_api_key(env: str, *, required: bool) -> str:
    """The API key from environment variable ``env``. Servers on one's own machine rarely check keys,
    so where ``required`` is false an unset variable means the placeholder ``EMPTY``."""
    key = os.environ.get(env)
    if key:
        return key
    if required:
        raise UserError(f"the API key is read from the environment variable {env}, which is not set "
                        "(set it to any value for a server that does not check keys)")
    return "EMPTY"


def make_client(url: str, key: str, timeout: float):
    """An ``openai.OpenAI`` client with the SDK's retries off (:func:`call_with_retries` does them)."""
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout)


def mask(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every registered secret and every one of ``secrets`` replaced by ``***`` (error
    messages can echo a key back; short keys are masked here too, down to four characters)."""
    from .redact import MASK, scrub, url_secrets

    for secret in secrets:
        for value in (secret, *url_secrets(secret)):
            if value and len(value) >= 4 and value != "EMPTY":
                text = text.replace(value, MASK)
    return scrub(text)


def call_with_retries(call: Callable[[], T], *, what: str, url: str, max_retries: int, backoff: float,
                      secrets: tuple[str, ...] = (), on_retry: Callable[[], None] | None = None) -> T:
    """``call()``, retried on transport errors and retryable statuses with backoff ``backoff * 2**attempt``.

    After the last attempt (or at once for a request the server will never accept) the failure is a
    :class:`UserError` naming ``what`` and the public URL, with every secret masked.
    """
    last: Exception | None = None
    attempts = 0
    for attempt in range(max_retries + 1):
        attempts = attempt + 1
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any transport/API error is retried, then reported
            last = exc
            status = getattr(exc, "status_code", None)
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                break  # a request the server will never accept (bad model name, auth): fail fast
            if attempt < max_retries:
                if on_retry is not None:
                    on_retry()
                time.sleep(backoff * (2**attempt))
    detail = mask(f"{type(last).__name__}: {last}", (*secrets, url))
    plural = "attempt" if attempts == 1 else "attempts"
    raise UserError(f"{what} at {public_url(url)} failed after {attempts} {plural}: {detail}"[:600])


def list_models(url: str, key: str = "EMPTY", timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET {url}/models``: the model cards the server serves (``id``; vLLM adds ``root``, the path)."""
    request = urllib.request.Request(f"{url.rstrip('/')}/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - a URL the user gave
        body = json.loads(response.read().decode("utf-8"))
    data = body.get("data") if isinstance(body, dict) else None
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def wait_until_ready(url: str, timeout: float, *, alive: Callable[[], bool] | None = None,
                     interval: float = 1.0, key: str = "EMPTY") -> float:
    """Poll ``GET {url}/models`` until it answers with a model list; return the seconds waited.

    ``alive`` (e.g. "the server process still runs") stops the wait early with an error when it turns
    false: a server that crashed on start-up is reported at once, not after the whole timeout.
    """
    started = time.monotonic()
    last = "no answer yet"
    while True:
        if alive is not None and not alive():
            raise UserError(f"the server for {public_url(url)} exited before it was ready ({last})")
        try:
            if list_models(url, key, timeout=min(10.0, max(interval, 1.0))):
                return time.monotonic() - started
            last = "an empty model list"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"[:200]
        if time.monotonic() - started > timeout:
            raise UserError(f"the server at {public_url(url)} was not ready after {timeout:.0f} s ({last})")
        time.sleep(interval)
