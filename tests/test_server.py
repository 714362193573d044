"""generate/server.py: start a server in its own process group, wait for it, stop all of it by its pid."""

from __future__ import annotations

import sys

import pytest

from lookahead_tuning.errors import UserError
from lookahead_tuning.generate.server import free_port, group_alive, served, server_command, start_server

# A server that answers GET /v1/models and forks a worker that ignores SIGTERM (like an engine process
# that is slow to shut down): stopping the server must not leave that worker behind.
SERVER = """
import http.server, json, subprocess, sys
subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "m"}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_stop_by_pid_ends_the_whole_process_group(tmp_path):
    port = free_port()
    with served([sys.executable, "-c", SERVER, str(port)], f"http://127.0.0.1:{port}/v1",
                log_path=tmp_path / "server.log", startup_timeout=60) as server:
        assert server.alive() and group_alive(server.pid) and server.startup_seconds is not None
        pid = server.pid
        server.stop(timeout=2)
    assert not group_alive(pid)  # the worker that ignored SIGTERM is gone too
    assert "serving" in (tmp_path / "server.log").read_text()


def test_a_server_that_dies_on_start_up_is_reported_with_its_log(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", "import sys; print('no such model: x', flush=True); sys.exit(3)"]
    with pytest.raises(UserError, match="exited before it was ready.*no such model: x"):
        start_server(command, f"http://127.0.0.1:{port}/v1", log_path=tmp_path / "s.log", startup_timeout=60)


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    with pytest.raises(UserError, match="not ready after 2 s"):
        start_server(command, f"http://127.0.0.1:{port}/v1", log_path=tmp_path / "s.log", startup_timeout=2)


def test_server_command_fills_each_word():
    words = server_command("serve --model {model} --port {port} --served-model-name {name}",
                           model="/models/with space", port="8001", name="m")
    assert words == ["serve", "--model", "/models/with space", "--port", "8001", "--served-model-name", "m"]
    with pytest.raises(UserError, match="placeholder"):
        server_command("serve {modle}", model="x", port="1", name="n")


def test_the_servers_log_masks_registered_secrets(tmp_path, monkeypatch):
    """Servers print their settings on start-up (vLLM its --api-key among them): the log in the run folder
    gets the server's output with every registered secret masked (issue 30, class 1)."""
    from lookahead_tuning import redact

    monkeypatch.setattr(redact, "_SECRETS", set())
    secret = "sk-server-flag-77d1e09aLEAKCHECK"
    redact.register_command(f"vllm serve m --api-key {secret}")
    port = free_port()
    command = [sys.executable, "-c", SERVER.replace('print("serving", flush=True)',
                                                    f'print("args: api_key={secret}", flush=True)'), str(port)]
    with served(command, f"http://127.0.0.1:{port}/v1", log_path=tmp_path / "server.log", startup_timeout=60):
        pass
    log = (tmp_path / "server.log").read_text()
    assert "args: api_key=***" in log and secret not in log
