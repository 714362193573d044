"""OpenAI-compatible servers: one client, one retry policy, bounded requests, checked answers, and no
secret on disk.

Both the LLM judge (``judge/llm.py``) and the ``openai`` generation backend
(``generate/openai_backend.py``) talk to such servers (vLLM, llama.cpp's server, a hosted API) through
the ``openai`` package. What they share lives here, so a retry, a timeout, a hostile answer or a leaked
credential is handled the same way by both:

- :func:`credentials` is the one place a server's credentials enter the process: the API key from its
  environment variable and the user info of the URL are registered with :mod:`lookahead_tuning.redact`
  there, so a server that echoes them (in an answer, an error, a model card) cannot get them into a file,
  a log or the terminal;
- every request has a **total deadline** (connect, send and read together, :func:`bounded`): the
  network streams under the client check the time left before each read and write, so a server that
  trickles one byte a second, or holds its headers back, is cut off at ``--request-timeout`` like a
  silent one;
- every answer is **bounded in size** (:func:`answer_bytes`: relative to the tokens asked for) and
  **checked by a schema** before anything reads it (:class:`CompletionAnswer`, :class:`ChatAnswer`,
  :class:`ModelList`): a 50 MB answer to two tokens, a string token count, a numeric text, malformed
  JSON or an answer cut short is one line, and nothing of it is kept;
- the SDK's own retries are off and :func:`call_with_retries` retries transport errors, timeouts and
  5xx/408/409/429 answers with exponential backoff, while any other 4xx (bad model name, bad key) and an
  answer refused above fail at once;
- :func:`public_url` is the only form of a base URL that is stored or printed: a key written into the
  URL (``http://user:KEY@host/v1``, ``?api_key=KEY``) never reaches a file or a log;
- :func:`wait_until_ready` polls ``GET {base_url}/models`` (every OpenAI-compatible server has it) until
  the server answers, for a server we started ourselves.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Annotated, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from .errors import UserError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
RETRYABLE_4XX = (408, 409, 429)

# What one answer may weigh: a fixed allowance for the envelope (ids, usage, a server's extra fields)
# plus a generous one per token asked for (a token is a few bytes of text; JSON escapes of non-ASCII
# text take six bytes a character). A larger answer is not an answer to what was asked.
ANSWER_OVERHEAD_BYTES = 64 * 1024
ANSWER_BYTES_PER_TOKEN = 1024
MODEL_LIST_BYTES = 8 * 1024 * 1024


def answer_bytes(max_tokens: int) -> int:
    """The largest answer accepted to a request for ``max_tokens`` tokens."""
    return ANSWER_OVERHEAD_BYTES + ANSWER_BYTES_PER_TOKEN * max(int(max_tokens), 1)


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


def read_api_key(env: str, *, required: bool, who: str = "the server") -> str:
    """The API key from environment variable ``env``, registered as a secret (see :func:`credentials`).
    Servers on one's own machine rarely check keys, so where ``required`` is false an unset variable
    means the placeholder ``EMPTY``."""
    from .redact import register

    key = os.environ.get(env)
    if key:
        register(key)
        return key
    if required:
        raise UserError(f"{who} reads its API key from the environment variable {env}, which is not set "
                        "(set it to any value for a server that does not check keys)")
    return "EMPTY"


def credentials(url: str, key_env: str, *, required: bool, who: str = "the server") -> tuple[str, str]:
    """``(public URL, API key)`` of a server, both registered as secrets before anything is asked of it.

    Every credential the process holds enters here (the generation backend and the judge both call it):
    the key from ``key_env``, the user info and key parameters of ``url`` and the Basic token an HTTP
    client makes of them. From then on :func:`lookahead_tuning.redact.scrub` masks them in every file
    written, every log line and every error, whatever a server echoes.
    """
    return public_url(url), read_api_key(key_env, required=required, who=who)


# --------------------------------------------------------------------------- bounded requests

_LIMITS = threading.local()  # the deadline and byte budget of the request this thread is making


@contextlib.contextmanager
def bounded(seconds: float | None, max_bytes: int | None = None) -> Iterator[None]:
    """Requests made by this thread inside the block end by ``seconds`` from now, connect, send and read
    together, and their answers may hold at most ``max_bytes`` bytes."""
    _LIMITS.seconds = seconds
    _LIMITS.deadline = None if seconds is None else time.monotonic() + seconds
    _LIMITS.max_bytes = max_bytes
    try:
        yield
    finally:
        _LIMITS.deadline = _LIMITS.seconds = _LIMITS.max_bytes = None


class AnswerTooLarge(Exception):
    """An answer over the byte budget of :func:`bounded` (never retried: it would be as large again).
    Its text is completed by "than the N bytes ..." where it is reported."""


def _time_left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of this thread's deadline; ``error`` once it has passed."""
    deadline = getattr(_LIMITS, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(f"no answer within {_LIMITS.seconds:g} s (the whole request, connect and read together)")
    return left if timeout is None else min(timeout, left)


def _transport(url: str):
    """An ``httpx2`` transport whose network streams keep :func:`bounded`'s deadline on every read and
    write: the client's own timeouts bound each read, not the request, so a trickling server could
    hold a run. Proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``) are honoured as the SDK's
    default client does."""
    import httpcore2
    import httpx2

    class Stream(httpcore2.NetworkStream):
        def __init__(self, inner: httpcore2.NetworkStream):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, _time_left(timeout, httpcore2.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _time_left(timeout, httpcore2.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore2.NetworkStream:
            return Stream(self._inner.start_tls(ssl_context, server_hostname,
                                                _time_left(timeout, httpcore2.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore2.NetworkBackend):
        def __init__(self):
            self._inner = httpcore2.SyncBackend()

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return Stream(self._inner.connect_tcp(host, port, _time_left(timeout, httpcore2.ConnectTimeout),
                                                  local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return Stream(self._inner.connect_unix_socket(path, _time_left(timeout, httpcore2.ConnectTimeout),
                                                          socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    def mapped(exc: Exception) -> Exception:
        # httpcore2's errors as the httpx2 ones of the same name, which the SDK turns into its own
        # timeout and connection errors.
        return getattr(httpx2, type(exc).__name__, httpx2.TransportError)(str(exc))

    class Body(httpx2.SyncByteStream):
        def __init__(self, inner, limit: int | None):
            self._inner, self._limit = inner, limit

        def __iter__(self):
            seen = 0
            try:
                for chunk in self._inner:
                    seen += len(chunk)
                    if self._limit is not None and seen > self._limit:
                        raise AnswerTooLarge("the answer is larger")
                    yield chunk
            except httpcore2.TimeoutException as exc:
                raise mapped(exc) from None
            except httpcore2.NetworkError as exc:
                raise mapped(exc) from None
            except httpcore2.ProtocolError as exc:
                raise mapped(exc) from None

        def close(self) -> None:
            self._inner.close()

    class Transport(httpx2.BaseTransport):
        def __init__(self):
            options = {"ssl_context": httpx2.create_ssl_context(), "network_backend": Backend(),
                       "max_connections": 1000}
            parts = urlsplit(url)
            proxy = urllib.request.getproxies().get(parts.scheme)
            if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
                self._pool = httpcore2.HTTPProxy(proxy_url=proxy, **options)
            else:
                self._pool = httpcore2.ConnectionPool(**options)

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            limit = getattr(_LIMITS, "max_bytes", None)
            # Asked uncompressed: a byte budget on a compressed answer would bound nothing.
            headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"accept-encoding"]
            headers.append((b"Accept-Encoding", b"identity"))
            core = httpcore2.Request(
                method=request.method,
                url=httpcore2.URL(scheme=request.url.raw_scheme, host=request.url.raw_host,
                                  port=request.url.port, target=request.url.raw_path),
                headers=headers, content=request.stream, extensions=request.extensions)
            try:
                answer = self._pool.handle_request(core)
            except httpcore2.TimeoutException as exc:
                raise mapped(exc) from None
            except (httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.ProxyError,
                    httpcore2.UnsupportedProtocol) as exc:
                raise mapped(exc) from None
            declared = dict((k.lower(), v) for k, v in answer.headers)
            size = declared.get(b"content-length", b"").strip()
            encoding = declared.get(b"content-encoding", b"identity").strip().lower()
            if limit is not None and size.isdigit() and int(size) > limit:
                answer.close()
                raise AnswerTooLarge(f"the answer declares {int(size):,} bytes, more")
            if encoding not in (b"", b"identity"):
                answer.close()
                raise AnswerTooLarge(f"the answer is compressed ({encoding.decode('latin-1')}) though asked "
                                     "uncompressed, so its size cannot be bounded")
            return httpx2.Response(status_code=answer.status, headers=answer.headers,
                                   stream=Body(answer.stream, limit), extensions=answer.extensions)

        def close(self) -> None:
            self._pool.close()

    return Transport()


def http_client(url: str, timeout: float):
    """The ``httpx2`` client every request to ``url`` goes through (see :func:`_transport`)."""
    import httpx2

    return httpx2.Client(transport=_transport(url), timeout=timeout, follow_redirects=False)


def make_client(url: str, key: str, timeout: float):
    """An ``openai.OpenAI`` client with the SDK's retries off (:func:`call_with_retries` does them) and
    requests bounded as :func:`bounded` says."""
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key, max_retries=0, timeout=timeout, http_client=http_client(url, timeout))


# --------------------------------------------------------------------------- what a server may answer


class _Answer(BaseModel):
    # Servers add fields of their own (vLLM's stop_reason, prompt_logprobs): only what is read is checked.
    model_config = ConfigDict(extra="ignore")
    shape: ClassVar[str] = "answer"  # what the answer should have been, for messages


LogProb = Annotated[float, Field(allow_inf_nan=False)]


class CompletionLogprobs(_Answer):
    # One entry per generated position: the most likely tokens and their log-probabilities.
    top_logprobs: list[dict[StrictStr, LogProb] | None] | None = None


class CompletionChoice(_Answer):
    text: StrictStr
    finish_reason: StrictStr | None = None
    logprobs: CompletionLogprobs | None = None


class Usage(_Answer):
    completion_tokens: StrictInt | None = Field(default=None, ge=0)


class CompletionAnswer(_Answer):
    """An answer of ``POST /completions``."""

    shape: ClassVar[str] = "completion"
    choices: list[CompletionChoice] = Field(min_length=1)
    usage: Usage | None = None


class ChatMessage(_Answer):
    content: StrictStr | None = None


class ChatChoice(_Answer):
    message: ChatMessage


class ChatAnswer(_Answer):
    """An answer of ``POST /chat/completions``."""

    shape: ClassVar[str] = "chat completion"
    choices: list[ChatChoice]


class ModelCard(_Answer):
    id: StrictStr
    root: StrictStr | None = None


class ModelList(_Answer):
    """An answer of ``GET /models``."""

    shape: ClassVar[str] = "model list"
    data: list[ModelCard]


class StatusError(Exception):
    """An HTTP error status from a request made without the SDK (the model list), with the SDK's
    ``status_code`` so :func:`call_with_retries` treats it as it treats the SDK's."""

    def __init__(self, status_code: int, text: str):
        super().__init__(f"HTTP {status_code}: {text[:300]}")
        self.status_code = status_code


class BadAnswer(UserError):
    """A server's answer that its schema refuses (never retried: the server said what it meant)."""


def parse_answer(body: bytes, schema: type[M], *, what: str, url: str) -> M:
    """``body`` read as ``schema``, or the one line saying what is wrong with it (:class:`BadAnswer`)."""
    from .validate import explain

    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        problem = explain(exc, None).message
    raise BadAnswer(f"{what} at {public_url(url)}: the server's answer is not a valid {schema.shape}: {problem}; "
                    "nothing of it was kept")


def mask(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every registered secret and every one of ``secrets`` replaced by ``***`` (error
    messages can echo a key back; short keys are masked here too, down to four characters)."""
    from .redact import MASK, scrub, url_secrets

    for secret in secrets:
        for value in (secret, *url_secrets(secret)):
            if value and len(value) >= 4 and value != "EMPTY":
                text = text.replace(value, MASK)
    return scrub(text)


def _is_timeout(exc: BaseException | None) -> bool:
    for _ in range(10):  # the SDK's error, the client's, the network stream's
        if exc is None:
            return False
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def call_with_retries(call: Callable[[], T], *, what: str, url: str, max_retries: int, backoff: float,
                      secrets: tuple[str, ...] = (), on_retry: Callable[[], None] | None = None,
                      timeout: float | None = None, max_bytes: int | None = None) -> T:
    """``call()``, retried on transport errors and retryable statuses with backoff ``backoff * 2**attempt``.

    Each attempt is :func:`bounded` by ``timeout`` seconds and ``max_bytes`` of answer. After the last
    attempt (or at once for a request the server will never accept, an answer too large or one its
    schema refuses) the failure is a :class:`UserError` naming ``what`` and the public URL, with every
    secret masked.
    """
    last: Exception | None = None
    attempts = 0
    for attempt in range(max_retries + 1):
        attempts = attempt + 1
        try:
            with bounded(timeout, max_bytes):
                return call()
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport/API error is retried, then reported
            last = exc
            too_large = next((e for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, AnswerTooLarge)), None)
            if too_large is not None:
                raise UserError(f"{what} at {public_url(url)}: {too_large} than the {max_bytes:,} bytes an answer "
                                "to this request may take; refused, nothing of it was kept") from None
            status = getattr(exc, "status_code", None)
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                break  # a request the server will never accept (bad model name, auth): fail fast
            if attempt < max_retries:
                if on_retry is not None:
                    on_retry()
                time.sleep(backoff * (2**attempt))
    detail = f"{type(last).__name__}: {last}"
    if timeout is not None and _is_timeout(last):
        detail += f" (each request may take {timeout:g} s in all, connect and read together: --request-timeout)"
    elif last is not None and last.__cause__ is not None and str(last.__cause__) not in detail:
        detail += f" ({type(last.__cause__).__name__}: {last.__cause__})"
    plural = "attempt" if attempts == 1 else "attempts"
    raise UserError(f"{what} at {public_url(url)} failed after {attempts} {plural}: {mask(detail, (*secrets, url))}"[:600])


def list_models(url: str, key: str = "EMPTY", timeout: float = 10.0) -> list[dict[str, Any]]:
    """``GET {url}/models``: the model cards the server serves (``id``; vLLM adds ``root``, the path).

    The whole request ends within ``timeout`` seconds; an answer over 8 MiB or one that is not a model
    list is refused (:class:`BadAnswer`)."""
    with http_client(url, timeout) as client, bounded(timeout, MODEL_LIST_BYTES):
        try:
            response = client.get(f"{url.rstrip('/')}/models", headers={"Authorization": f"Bearer {key}"})
        except AnswerTooLarge as exc:
            raise BadAnswer(f"model list at {public_url(url)}: {exc} than the {MODEL_LIST_BYTES:,} bytes a model "
                            "list may take; refused") from None
        if response.status_code >= 400:
            raise StatusError(response.status_code, response.text)
        answer = parse_answer(response.content, ModelList, what="model list", url=url)
    return [card.model_dump(exclude_none=True) for card in answer.data]


def wait_until_ready(url: str, timeout: float, *, alive: Callable[[], bool] | None = None,
                     interval: float = 1.0, key: str = "EMPTY") -> float:
    """Poll ``GET {url}/models`` until it answers with a model list; return the seconds waited.

    ``alive`` (e.g. "the server process still runs") stops the wait early with an error when it turns
    false: a server that crashed on start-up is reported at once, not after the whole timeout.
    """
    import httpx2

    started = time.monotonic()
    last = "no answer yet"
    while True:
        if alive is not None and not alive():
            raise UserError(f"the server for {public_url(url)} exited before it was ready ({last})")
        try:
            if list_models(url, key, timeout=min(10.0, max(interval, 1.0))):
                return time.monotonic() - started
            last = "an empty model list"
        except BadAnswer as exc:
            last = exc.message[:200]
        except (httpx2.HTTPError, StatusError, OSError, ValueError) as exc:
            last = mask(f"{type(exc).__name__}: {exc}", (key, url))[:200]
        if time.monotonic() - started > timeout:
            raise UserError(f"the server at {public_url(url)} was not ready after {timeout:.0f} s ({last})")
        time.sleep(interval)
