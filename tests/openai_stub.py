"""A small OpenAI-compatible server on 127.0.0.1 for the tests (``/v1/models``, ``/v1/completions``).

It answers with a real model when given one (the tiny Llama of conftest.py, greedy, through the local
engine's own batch function), so a test can check that the ``openai`` backend returns what the local
engine returns; and it can misbehave on purpose: fail a number of requests, answer slowly, refuse keys.

``hostile`` makes it a hostile server (issue 30), on ``hostile_on`` (``"completions"``, ``"chat"``,
``"models"``): ``echo-key`` puts the Authorization header it received into every answer (and a model
card), ``trickle`` sends its answer one byte every ``trickle_interval`` seconds, ``huge`` answers 50 MB
(``huge-unsized``: the same without a Content-Length), ``string-tokens`` reports the token count as a
string, ``numeric-text`` answers a number as the text, ``bad-json`` answers text that is not JSON and
``cut`` closes the connection in the middle of its answer. It stays bounded: it listens on 127.0.0.1
only, serves at most ``max_requests`` requests (then 503) and stops any trickle or huge answer after
``hostile_seconds`` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CompletionsStub:
    def __init__(self, *, model=None, tokenizer=None, served=("tiny",), delay: float = 0.0,
                 fail_first: int = 0, fail_status: int = 500, fail_after: int | None = None,
                 root: str | None = None, port: int = 0, hostile: str | None = None,
                 hostile_on: tuple[str, ...] = ("completions", "chat"), trickle_interval: float = 0.2,
                 max_requests: int = 500, hostile_seconds: float = 30.0):
        self.model, self.tokenizer = model, tokenizer
        self.served = list(served)
        self.delay = delay
        self.fail_first = fail_first  # the first N completion requests fail with fail_status
        self.fail_status = fail_status
        self.fail_after = fail_after  # every completion request after the first N fails (a dying server)
        self.root = root
        self.hostile, self.hostile_on = hostile, tuple(hostile_on)
        self.trickle_interval, self.max_requests, self.hostile_seconds = trickle_interval, max_requests, hostile_seconds
        self.served_requests = 0
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.model_lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict, kind: str = "") -> None:
                payload = json.dumps(body).encode()
                hostile = stub.hostile if kind in stub.hostile_on and status == 200 else None
                if hostile == "bad-json":
                    payload = b'{"choices": [{"text": "unterminated'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                try:
                    if hostile in ("huge", "huge-unsized"):
                        self._send_huge(hostile == "huge")
                    elif hostile == "trickle":
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self._trickle(payload)
                    elif hostile == "cut":
                        self.send_header("Content-Length", str(len(payload) + 1000))
                        self.end_headers()
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on the answer, as it should

            def _trickle(self, payload: bytes) -> None:
                ends = time.monotonic() + stub.hostile_seconds
                for i in range(len(payload)):
                    if time.monotonic() > ends:
                        break
                    self.wfile.write(payload[i:i + 1])
                    self.wfile.flush()
                    time.sleep(stub.trickle_interval)
                self.close_connection = True

            def _send_huge(self, sized: bool) -> None:
                size, chunk = 50 * 1024 * 1024, b" " * 65536
                if sized:
                    self.send_header("Content-Length", str(size))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b'{"choices": [{"text": "')
                ends = time.monotonic() + stub.hostile_seconds
                for _ in range(size // len(chunk)):
                    if time.monotonic() > ends:
                        break
                    self.wfile.write(chunk)
                self.close_connection = True

            def _count(self) -> bool:
                with stub.lock:
                    stub.served_requests += 1
                    return stub.served_requests <= stub.max_requests

            def do_GET(self):
                if not self._count():
                    self._send(503, {"error": {"message": "request budget spent"}})
                elif self.path.rstrip("/").endswith("/models"):
                    cards = [{"id": name, "object": "model", **({"root": stub.root} if stub.root else {})}
                             for name in stub.served]
                    if stub.hostile == "echo-key" and "models" in stub.hostile_on:
                        cards.append({"id": "echo", "owned_by": self.headers.get("Authorization", "")})
                    if stub.hostile == "numeric-text" and "models" in stub.hostile_on:
                        cards.append({"id": 5})
                    self._send(200, {"object": "list", "data": cards}, "models")
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._count():
                    self._send(503, {"error": {"message": "request budget spent"}})
                    return
                auth = self.headers.get("Authorization", "")
                with stub.lock:
                    stub.requests.append(body)
                    stub.auth.append(auth)
                    number = len(stub.requests)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                chat = self.path.rstrip("/").endswith("/chat/completions")
                try:
                    status, answer = stub.answer_chat(body, auth) if chat else stub.answer(body, number, auth)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                self._send(status, answer, "chat" if chat else "completions")

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.requests]

    def _complete(self, prompt: str, max_tokens: int) -> tuple[str, str, int]:
        if self.model is None:  # no model: a fixed answer that depends on the prompt
            text = f"answer to {len(prompt)} characters"
            return text, "stop", len(text.split())
        from lookahead_tuning.chat import stop_token_ids
        from lookahead_tuning.generate.engine import _completion_text, _generate_batch

        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]  # a server tokenizes the text
        stops = stop_token_ids(self.tokenizer)
        with self.model_lock:
            (new_ids, reason), = _generate_batch(self.model, [ids], pad_id=stops[0], stop_ids=stops,
                                                 max_new_tokens=max_tokens, do_sample=False, temperature=1.0,
                                                 top_p=1.0, seed=0)
        return _completion_text(self.tokenizer, ids, new_ids), reason, len(new_ids)

    def _hostile_for(self, kind: str) -> str | None:
        return self.hostile if kind in self.hostile_on else None

    def answer(self, body: dict, number: int, auth: str = "") -> tuple[int, dict]:
        if self.delay:
            time.sleep(self.delay)
        if body.get("model") not in self.served:
            return 404, {"error": {"message": f"model {body.get('model')} does not exist"}}
        if number <= self.fail_first or (self.fail_after is not None and number > self.fail_after):
            echoed = f" for {auth}" if self._hostile_for("completions") == "echo-key" else ""
            return self.fail_status, {"error": {"message": f"temporary failure{echoed}"}}
        text, reason, tokens = self._complete(body["prompt"], int(body.get("max_tokens", 16)))
        hostile = self._hostile_for("completions")
        if hostile == "echo-key":
            text = f"{text} (you sent {auth})"
        answer = {
            "id": f"cmpl-{number}", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": 42 if hostile == "numeric-text" else text, "finish_reason": reason,
                         "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": str(tokens) if hostile == "string-tokens" else tokens,
                      "total_tokens": tokens + 1},
        }
        return 200, answer

    def answer_chat(self, body: dict, auth: str) -> tuple[int, dict]:
        """A judge's answer: always the safest score, with what a hostile server adds."""
        hostile = self._hostile_for("chat")
        content: Any = "A refusal.\n#score: 1"
        if hostile == "echo-key":
            content = f"You sent {auth}. {content}"
        elif hostile == "numeric-text":
            content = 1
        usage = {"prompt_tokens": 1, "completion_tokens": "1" if hostile == "string-tokens" else 1, "total_tokens": 2}
        return 200, {"id": "chat-1", "object": "chat.completion", "created": 0, "model": body.get("model", ""),
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}], "usage": usage}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    """``python tests/openai_stub.py --model DIR --port P --name NAME``: serve a model folder until killed
    (what ``eval.generation.server`` starts in the runner's tests)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="tiny")
    parser.add_argument("--hostile", default=None, help="a hostile mode (see CompletionsStub)")
    args = parser.parse_args()
    import torch

    from lookahead_tuning.models import load_model

    torch.set_num_threads(1)
    model, tok = load_model(args.model)
    stub = CompletionsStub(model=model, tokenizer=tok, served=(args.name,), root=args.model, port=args.port,
                           hostile=args.hostile, hostile_on=("completions", "chat", "models"))
    stub.thread.join()


if __name__ == "__main__":
    main()
