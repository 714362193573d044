"""A stub OpenAI-compatible judge server on 127.0.0.1 for the judge tests: ``/v1/chat/completions`` and
``/v1/completions``, answered by a function of the request body, so a test can answer in any judge's
grammar, malformed answers included (``answer(body) -> text`` or ``(text, logprobs)``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JudgeStub:
    def __init__(self, answer: Callable[[dict], Any]):
        self.answer = answer
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append(body)
                out = stub.answer(body)
                text, logprobs = out if isinstance(out, tuple) else (out, None)
                if self.path.rstrip("/").endswith("/chat/completions"):
                    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    if logprobs is not None:
                        choice["logprobs"] = {"content": [{"token": text, "logprob": 0.0, "top_logprobs": [
                            {"token": t, "logprob": lp} for t, lp in logprobs.items()]}]}
                    kind = "chat.completion"
                else:
                    choice = {"index": 0, "finish_reason": "stop", "text": text}
                    if logprobs is not None:
                        choice["logprobs"] = {"tokens": [text], "token_logprobs": [0.0], "top_logprobs": [logprobs]}
                    kind = "text_completion"
                payload = json.dumps({"id": "x", "object": kind, "created": 0, "model": body.get("model", ""),
                                      "choices": [choice],
                                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                                     ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
