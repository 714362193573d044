"""A small OpenAI-compatible server on 127.0.0.1 for the tests (``/v1/models``, ``/v1/completions``).

It answers with a real model when given one (the tiny Llama of conftest.py, greedy, through the local
engine's own batch function), so a test can check that the ``openai`` backend returns what the local
engine returns; and it can misbehave on purpose: fail a number of requests, answer slowly, refuse keys.
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
                 root: str | None = None, port: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.served = list(served)
        self.delay = delay
        self.fail_first = fail_first  # the first N completion requests fail with fail_status
        self.fail_status = fail_status
        self.fail_after = fail_after  # every completion request after the first N fails (a dying server)
        self.root = root
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

            def _send(self, status: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    cards = [{"id": name, "object": "model", **({"root": stub.root} if stub.root else {})}
                             for name in stub.served]
                    self._send(200, {"object": "list", "data": cards})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(body)
                    stub.auth.append(self.headers.get("Authorization", ""))
                    number = len(stub.requests)
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    status, answer = stub.answer(body, number)
                finally:
                    with stub.lock:
                        stub.in_flight -= 1
                self._send(status, answer)

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

    def answer(self, body: dict, number: int) -> tuple[int, dict]:
        if self.delay:
            time.sleep(self.delay)
        if body.get("model") not in self.served:
            return 404, {"error": {"message": f"model {body.get('model')} does not exist"}}
        if number <= self.fail_first or (self.fail_after is not None and number > self.fail_after):
            return self.fail_status, {"error": {"message": "temporary failure"}}
        text, reason, tokens = self._complete(body["prompt"], int(body.get("max_tokens", 16)))
        return 200, {
            "id": f"cmpl-{number}", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1},
        }

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
    args = parser.parse_args()
    import torch

    from lookahead_tuning.models import load_model

    torch.set_num_threads(1)
    model, tok = load_model(args.model)
    stub = CompletionsStub(model=model, tokenizer=tok, served=(args.name,), root=args.model, port=args.port)
    stub.thread.join()


if __name__ == "__main__":
    main()
