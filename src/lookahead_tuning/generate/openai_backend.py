"""The ``openai`` generation backend: answers from any OpenAI-compatible server.

Users with a GPU cluster serve their model with vLLM (or llama.cpp's server, or a hosted API) and want
the same evaluation as the local engine. This backend keeps the engine's contract — the same result
records, resumable through the same log, in input order — and only changes who computes the tokens.

Why the **completions** endpoint with a prompt we render ourselves, not the chat endpoint:

- A prefilling attack (JSR) needs the assistant's turn to *start* with the harmful prefill. A chat
  endpoint always opens a fresh assistant turn after the messages it is given, so the model would answer
  the prefill instead of continuing it (vLLM's ``continue_final_message`` is an extension other servers
  lack). The completions endpoint continues raw text, so the prefill is simply the end of the prompt.
- The prompt text is :func:`lookahead_tuning.chat.render_prompt`'s, the exact text the local engine
  tokenizes and training used, so the answers do not depend on the server's copy of the chat template
  (or on a server that has none, or one the user changed with ``--chat-template``).

Requests go out ``concurrency`` at a time (the server batches them); each is retried with backoff on
transport errors and 5xx answers (:func:`lookahead_tuning.endpoint.call_with_retries`). Before the
first request the server's model list must name ``served_model``: a typo, or a server that serves
another model, is an error, not a run of answers from the wrong model.

A server is not trusted with what reaches the answers file: its key and the URL's credentials are
registered as secrets when the endpoint is made (:func:`lookahead_tuning.endpoint.credentials`), each
request ends within ``--request-timeout`` seconds in all, and an answer is checked by its schema and
its size (relative to ``max_new_tokens``) before a record is made of it, so a refused answer leaves no
record behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from ..endpoint import (
    CompletionAnswer,
    answer_bytes,
    call_with_retries,
    check_base_url,
    credentials,
    list_models,
    make_client,
    parse_answer,
    public_url,
)
from ..errors import UserError


@dataclass(frozen=True)
class OpenAIEndpoint:
    """Where to generate: a server's base URL (``http://host:port/v1``) and the model name it serves."""

    base_url: str
    served_model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout: float = 600.0
    max_retries: int = 4
    backoff: float = 1.0
    # The server was started by this process on the weights the caller names itself (the experiment
    # runner's per-cell server), so its port-of-the-day URL says nothing about what answered.
    serves_own_weights: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", check_base_url(self.base_url, "--base-url"))
        if not self.served_model:
            raise UserError("--served-model is required with --backend openai (the model name the server serves)")
        if self.concurrency < 1:
            raise UserError(f"--concurrency must be at least 1, got {self.concurrency}")
        if not self.timeout > 0:
            raise UserError(f"--request-timeout must be a positive number of seconds, got {self.timeout}")
        if self.max_retries < 0:
            raise UserError(f"--max-retries must be 0 or more, got {self.max_retries}")
        credentials(self.base_url, self.api_key_env, required=False)  # masked from here on, whatever is echoed

    def key(self) -> str:
        """The API key to send (``EMPTY`` when its variable is unset: local servers rarely check keys)."""
        return credentials(self.base_url, self.api_key_env, required=False)[1]

    def settings(self) -> dict[str, Any]:
        """What records where the answers came from (no secret: the URL loses any credential)."""
        return {"base_url": public_url(self.base_url), "served_model": self.served_model,
                "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                "request_timeout": self.timeout, "max_retries": self.max_retries}

    def served_card(self, key: str = "EMPTY") -> dict[str, Any]:
        """The server's model card for ``served_model`` (vLLM's has ``root``: the weights it loaded)."""
        cards = call_with_retries(lambda: list_models(self.base_url, key, timeout=min(self.timeout, 30.0)),
                                  what="model list", url=self.base_url, max_retries=self.max_retries,
                                  backoff=self.backoff, secrets=(key,), timeout=min(self.timeout, 30.0))
        card = next((c for c in cards if c.get("id") == self.served_model), None)
        if card is None:
            names = ", ".join(str(c.get("id")) for c in cards[:10]) or "none"
            raise UserError(f"the server at {public_url(self.base_url)} does not serve '{self.served_model}' "
                            f"(it serves: {names}); check --served-model")
        return card


def _request(client, endpoint: OpenAIEndpoint, key: str, text: str, options: dict[str, Any]) -> tuple[str, str, int | None]:
    """One completion: (text, finish reason, completion tokens as the server counted them), from an
    answer its schema and size accept."""
    def call() -> CompletionAnswer:
        raw = client.completions.with_raw_response.create(model=endpoint.served_model, prompt=text, **options)
        return parse_answer(raw.content, CompletionAnswer, what="generation", url=endpoint.base_url)

    out = call_with_retries(call, what="generation", url=endpoint.base_url, max_retries=endpoint.max_retries,
                            backoff=endpoint.backoff, secrets=(key,), timeout=endpoint.timeout,
                            max_bytes=answer_bytes(options["max_tokens"]))
    choice = out.choices[0]
    reason = "length" if choice.finish_reason == "length" else "stop"
    tokens = out.usage.completion_tokens if out.usage is not None else None
    if tokens is not None and tokens > options["max_tokens"]:
        raise UserError(f"generation at {public_url(endpoint.base_url)}: the server counted {tokens} completion "
                        f"tokens for a request of at most {options['max_tokens']}; nothing of it was kept")
    return choice.text, reason, tokens


def generate_openai(endpoint: OpenAIEndpoint, tokenizer, batches: list[list[dict]], encoded: dict[str, list[int]],
                    *, write: Callable[[dict], None], progress: bool, texts: dict[str, str], max_new_tokens: int,
                    do_sample: bool, temperature: float, top_p: float, seed: int, **_: Any) -> None:
    """The engine's contract over HTTP: every item of ``batches`` answered and passed to ``write``.

    The server is sent ``texts`` (the rendered prompts); ``encoded`` (their token ids) is not needed.
    Records are written as their answers arrive (not in order); greedy decoding is temperature 0.
    Sampling sends a per-item seed derived like the local engine's, so a resumed run asks the same.
    """
    from tqdm.auto import tqdm

    from .engine import _batch_seed

    if not isinstance(endpoint, OpenAIEndpoint):
        raise UserError("backend 'openai' takes an OpenAIEndpoint (base URL and served model) as the model")
    key = endpoint.key()
    endpoint.served_card(key)
    client = make_client(endpoint.base_url, key, endpoint.timeout)
    items = [item for batch in batches for item in batch]
    base: dict[str, Any] = {"max_tokens": max_new_tokens, "n": 1, "temperature": 0.0, "top_p": 1.0}
    if do_sample:
        base.update(temperature=temperature, top_p=top_p)

    def one(item: dict) -> dict:
        options = dict(base, seed=_batch_seed(seed, [item["id"]])) if do_sample else base
        text, reason, tokens = _request(client, endpoint, key, texts[item["id"]], options)
        if tokens is None:  # a server that reports no usage: count with our tokenizer
            tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return {**item, "completion": text, "finish_reason": reason, "completion_tokens": tokens}

    n_tokens, start = 0, time.perf_counter()
    bar = tqdm(total=len(items), unit="prompt", desc="generate (openai)", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=endpoint.concurrency)
    futures = [pool.submit(one, item) for item in items]
    try:
        for fut in as_completed(futures):
            record = fut.result()  # the first failure ends the run; finished records are already logged
            write(record)
            n_tokens += record["completion_tokens"]
            bar.update(1)
            bar.set_postfix(tok_s=f"{n_tokens / max(time.perf_counter() - start, 1e-9):.1f}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
