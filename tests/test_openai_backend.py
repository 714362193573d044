"""The ``openai`` generation backend against a local OpenAI-compatible server (tests/openai_stub.py).

The stub answers with the tiny Llama through the local engine's own batch function, so "the backend
returns what the local engine returns" is a real check of the protocol: prompt text rendered here,
tokenized there, answer text decoded there, records, resume, concurrency, retries and timeouts.
"""

from __future__ import annotations

import json
import os

import pytest
from openai_stub import CompletionsStub

from lookahead_tuning.cli import main
from lookahead_tuning.endpoint import public_url
from lookahead_tuning.errors import UserError
from lookahead_tuning.generate.engine import generate, generation_settings
from lookahead_tuning.generate.openai_backend import OpenAIEndpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["Hi", "What is the capital of France?", "List three colors.", "2+2?", "Name a fruit.",
           "Write one word about the sea."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from lookahead_tuning.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture
def served(tiny):
    stubs: list[CompletionsStub] = []

    def start(**kwargs) -> CompletionsStub:
        model, tok = tiny
        stub = CompletionsStub(model=model, tokenizer=tok, **kwargs)
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.close()


def _items(prompts=PROMPTS, **extra):
    return [{"id": f"q{i}", "prompt": p, **extra} for i, p in enumerate(prompts)]


def _endpoint(stub, **kwargs) -> OpenAIEndpoint:
    return OpenAIEndpoint(stub.url, "tiny", **{"backoff": 0.01, **kwargs})


def test_greedy_answers_equal_the_local_engine(tiny, served):
    model, tok = tiny
    stub = served()
    items = _items() + [{"id": "p", "prompt": "How do I do it?", "prefill": "Sure, here is"}]
    local = generate(model, tok, items, max_new_tokens=10, progress=False)
    remote = generate(_endpoint(stub, concurrency=3), tok, items, max_new_tokens=10, progress=False,
                      backend="openai")
    assert [r["id"] for r in remote] == [r["id"] for r in local]  # input order
    for a, b in zip(local, remote, strict=True):
        assert (a["completion"], a["finish_reason"], a["completion_tokens"]) == \
               (b["completion"], b["finish_reason"], b["completion_tokens"])
    # the completions endpoint got our rendered chat text, the prefill at its end (an open assistant turn)
    prefilled = next(p for p in stub.prompts() if p.endswith("Sure, here is"))
    assert prefilled.startswith("<|im_start|>") and "<|im_start|>assistant\nSure, here is" in prefilled
    assert all(r["temperature"] == 0.0 and r["max_tokens"] == 10 for r in stub.requests)


def test_resume_after_a_server_dies_mid_run_has_no_duplicates(tiny, served, tmp_path):
    _, tok = tiny
    log = tmp_path / "out.jsonl"
    dying = served(fail_after=3)
    with pytest.raises(UserError, match="generation at http://127.0.0.1:.* failed after 2 attempts"):
        generate(_endpoint(dying, concurrency=1, max_retries=1), tok, _items(), out_path=log,
                 max_new_tokens=4, progress=False, backend="openai")
    first = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(first) == 3
    healthy = served()
    results = generate(_endpoint(healthy), tok, _items(), out_path=log, max_new_tokens=4, progress=False,
                       backend="openai")
    ids = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}" for i in range(len(PROMPTS)))  # every id once
    assert len(healthy.requests) == len(PROMPTS) - 3  # only the missing ones were asked
    assert [r["id"] for r in results] == [f"q{i}" for i in range(len(PROMPTS))]


def test_concurrency_is_bounded_and_used(tiny, served):
    _, tok = tiny
    stub = served(delay=0.3)
    generate(_endpoint(stub, concurrency=3), tok, _items(), max_new_tokens=2, progress=False, backend="openai")
    assert stub.max_in_flight == 3


def test_transient_errors_are_retried(tiny, served):
    _, tok = tiny
    stub = served(fail_first=2, fail_status=503)
    results = generate(_endpoint(stub, concurrency=1), tok, _items()[:2], max_new_tokens=2, progress=False,
                       backend="openai")
    assert len(results) == 2 and len(stub.requests) == 4


def test_a_rejected_request_is_not_retried(tiny, served):
    _, tok = tiny
    stub = served(fail_first=1, fail_status=400)
    with pytest.raises(UserError, match="failed after 1 attempt:"):
        generate(_endpoint(stub, concurrency=1), tok, _items()[:1], max_new_tokens=2, progress=False,
                 backend="openai")
    assert len(stub.requests) == 1


def test_request_timeout(tiny, served):
    _, tok = tiny
    stub = served(delay=3.0)
    with pytest.raises(UserError, match="(?i)timed? ?out"):
        generate(_endpoint(stub, timeout=0.5, max_retries=0), tok, _items()[:1], max_new_tokens=2,
                 progress=False, backend="openai")


def test_a_model_the_server_does_not_serve_is_refused(tiny, served):
    _, tok = tiny
    stub = served(served=("other-model",))
    with pytest.raises(UserError, match="does not serve 'tiny'.*other-model"):
        generate(_endpoint(stub), tok, _items()[:1], max_new_tokens=2, progress=False, backend="openai")
    assert stub.requests == []  # nothing was generated by the wrong model


def test_sampling_sends_a_seed_per_item_that_a_rerun_repeats(tiny, served):
    _, tok = tiny
    stub = served()
    for _ in range(2):
        generate(_endpoint(stub), tok, _items()[:3], max_new_tokens=2, do_sample=True, temperature=0.7,
                 top_p=0.9, seed=5, progress=False, backend="openai")
    seeds = [r["seed"] for r in stub.requests]
    assert len(set(seeds[:3])) == 3 and sorted(seeds[:3]) == sorted(seeds[3:])
    assert all(r["temperature"] == 0.7 and r["top_p"] == 0.9 for r in stub.requests)


def test_credentials_in_the_url_are_never_stored(tiny, served, tmp_path, monkeypatch):
    _, tok = tiny
    stub = served()
    secret = "sk-url-secret-1234"
    url = stub.url.replace("http://", f"http://user:{secret}@") + f"?api_key={secret}"
    assert secret not in public_url(url) and "127.0.0.1" in public_url(url)
    endpoint = _endpoint(stub).__class__(url, "tiny")
    settings = generation_settings(endpoint, backend="openai", max_new_tokens=3)
    assert secret not in json.dumps(settings) and settings["endpoint"]["served_model"] == "tiny"


def test_bad_endpoint_settings_are_one_line_errors():
    for kwargs, pattern in [({"base_url": "", "served_model": "m"}, "--base-url is required"),
                            ({"base_url": "ftp://x/v1", "served_model": "m"}, "http"),
                            ({"base_url": "http://127.0.0.1:1/v1", "served_model": ""}, "--served-model"),
                            ({"base_url": "http://127.0.0.1:1/v1", "served_model": "m", "concurrency": 0},
                             "--concurrency")]:
        with pytest.raises(UserError, match=pattern):
            OpenAIEndpoint(**kwargs)


def test_the_api_key_is_sent_from_its_variable(tiny, served, monkeypatch):
    _, tok = tiny
    stub = served()
    monkeypatch.setenv("GEN_KEY_TEST", "sk-gen-77")
    generate(_endpoint(stub, api_key_env="GEN_KEY_TEST"), tok, _items()[:1], max_new_tokens=2, progress=False,
             backend="openai")
    assert stub.auth == ["Bearer sk-gen-77"]


# ------------------------------------------------------------------ the commands


def test_cli_generate_eval_safety_and_utility_through_a_server(tiny_model_dir, tiny, served, tmp_path, capsys):
    stub = served()
    server = ["--backend", "openai", "--base-url", stub.url, "--served-model", "tiny", "--concurrency", "2"]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"h{i}", "instruction": p, "category": "c"}) + "\n"
                               for i, p in enumerate(PROMPTS[:3])))
    out = tmp_path / "gen.jsonl"
    assert main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "4", "--quiet", *server]) == 0
    assert len(out.read_text().splitlines()) == 3

    rsr = tmp_path / "rsr"
    assert main(["eval", "safety", "--model", str(tiny_model_dir), "--limit", "3", "--max-new-tokens", "4",
                 "--out", str(rsr), "--quiet", *server]) == 0
    jsr = tmp_path / "jsr"
    assert main(["eval", "safety", "--model", str(tiny_model_dir), "--prefill", "--limit", "2",
                 "--max-new-tokens", "4", "--out", str(jsr), "--quiet", *server]) == 0
    metrics = json.loads((jsr / "metrics.json").read_text())
    assert metrics["mode"] == "JSR" and metrics["n"] == 2
    assert metrics["generation"]["backend"] == "openai"
    assert metrics["generation"]["endpoint"]["served_model"] == "tiny"
    # the JSR requests end with the prefill: the model continues the harmful answer's opening
    from lookahead_tuning.data.builtin import harmful_answers
    from lookahead_tuning.generate.engine import prefill_text

    _, tok = tiny
    opening = prefill_text(tok, harmful_answers()[0][1]["content"], 3)
    assert any(p.endswith(opening) for p in stub.prompts())

    util = tmp_path / "util"
    assert main(["eval", "utility", "--model", str(tiny_model_dir), "--task", "math", "--limit", "2",
                 "--max-new-tokens", "4", "--out", str(util), "--quiet", *server]) == 0
    assert json.loads((util / "metrics.json").read_text())["n"] == 2
    capsys.readouterr()


def test_answers_from_one_server_are_not_resumed_as_another_source(tiny_model_dir, served, tmp_path, capsys):
    """--model names only the tokenizer with --backend openai: the answering server (URL, served model)
    is part of what an output folder records, so a rerun against another server, or with the local
    weights, is refused with one line naming the difference instead of reusing the answers."""
    first, second = served(), served(served=("tiny", "other"))
    common = ["--model", str(tiny_model_dir), "--limit", "2", "--max-new-tokens", "3", "--quiet"]
    rsr = tmp_path / "rsr"
    via = lambda stub, name="tiny": ["--backend", "openai", "--base-url", stub.url, "--served-model", name]  # noqa: E731
    assert main(["eval", "safety", *common, "--out", str(rsr), *via(first)]) == 0
    assert main(["eval", "safety", *common, "--out", str(rsr), *via(first)]) == 0  # same source: resumed
    capsys.readouterr()
    for other in (via(second), via(second, "other"), []):  # another server, another model, local weights
        assert main(["eval", "safety", *common, "--out", str(rsr), *other]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "generation.source" in err and len(err.splitlines()) == 1, err
    out = tmp_path / "gen.jsonl"
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nname a colour\n")
    gen = ["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
           "--max-new-tokens", "3", "--quiet"]
    assert main([*gen, *via(first)]) == 0
    assert main([*gen, *via(second)]) == 2 and "generation.source" in capsys.readouterr().err
    assert main([*gen, *via(second), "--overwrite"]) == 0  # redone on request


def test_cli_server_flags_without_the_openai_backend_are_refused(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    code = main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts),
                 "--out", str(tmp_path / "o.jsonl"), "--base-url", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: --base-url is for --backend openai (the backend is hf)"
    assert not os.path.exists(tmp_path / "o.jsonl")


# ------------------------------------------------------------------ hostile or broken servers (issue 30, class 6)


def _no_records(path) -> bool:
    return not path.exists() or path.read_text() == ""


def test_a_trickling_server_is_cut_off_at_the_request_timeout(tiny, served, tmp_path):
    """--request-timeout bounds the whole request: one byte every 0.2 s never trips a per-read timeout,
    and the answer would take about a minute to arrive."""
    import time

    _, tok = tiny
    for hostile_on in (("completions",), ("models",)):
        stub = served(hostile="trickle", hostile_on=hostile_on, trickle_interval=0.2)
        log = tmp_path / f"{hostile_on[0]}.jsonl"
        started = time.monotonic()
        with pytest.raises(UserError, match=r"timed out.*1 s in all|no answer within 1 s") as caught:
            generate(_endpoint(stub, timeout=1.0, max_retries=0), tok, _items()[:1], out_path=log,
                     max_new_tokens=2, progress=False, backend="openai")
        assert time.monotonic() - started < 8, hostile_on
        assert "\n" not in caught.value.message and _no_records(log)


@pytest.mark.parametrize("hostile", ["huge", "huge-unsized"])
def test_a_huge_answer_to_two_tokens_is_refused_and_nothing_stored(tiny, served, tmp_path, hostile):
    import time

    _, tok = tiny
    stub = served(hostile=hostile)
    log = tmp_path / "out.jsonl"
    started = time.monotonic()
    with pytest.raises(UserError, match=r"(is larger|declares 52,428,800 bytes, more) than the 67,584 bytes an answer to this "
                                      r"request may take; refused, nothing of it was kept") as caught:
        generate(_endpoint(stub, concurrency=1), tok, _items()[:1], out_path=log, max_new_tokens=2,
                 progress=False, backend="openai")
    assert len(stub.requests) == 1  # not retried: it would be as large again
    assert time.monotonic() - started < 20 and "\n" not in caught.value.message and _no_records(log)


@pytest.mark.parametrize(("hostile", "needle"), [
    ("string-tokens", "key 'usage.completion_tokens'"),
    ("numeric-text", "key 'choices.0.text'"),
    ("bad-json", "(?i)invalid json"),
])
def test_an_answer_of_the_wrong_shape_is_one_line_and_no_record(tiny_model_dir, tiny, served, tmp_path, capsys,
                                                                hostile, needle):
    """A string token count used to end in 'unexpected TypeError (a bug)' with the record kept; a numeric
    text was written and refused later. Now the schema refuses either before a record is made."""
    stub = served(hostile=hostile)
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nname a colour\n")
    out = tmp_path / "gen.jsonl"
    code = main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "3", "--quiet", "--backend", "openai", "--base-url", stub.url,
                 "--served-model", "tiny", "--concurrency", "1", "--max-retries", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: generation at http://127.0.0.1:") and err.count("\n") == 1, err
    assert "the server's answer is not a valid completion: " in err
    import re

    assert re.search(needle, err), err
    assert _no_records(out)


def test_a_server_closing_mid_answer_is_retried_then_one_line(tiny, served, tmp_path):
    _, tok = tiny
    stub = served(hostile="cut")
    log = tmp_path / "out.jsonl"
    with pytest.raises(UserError, match="failed after 2 attempts: .*(RemoteProtocolError|incomplete|closed)") as caught:
        generate(_endpoint(stub, concurrency=1, max_retries=1), tok, _items()[:1], out_path=log,
                 max_new_tokens=2, progress=False, backend="openai")
    assert len(stub.requests) == 2 and "\n" not in caught.value.message and _no_records(log)


def test_a_model_list_of_the_wrong_shape_is_refused(tiny, served):
    _, tok = tiny
    stub = served(hostile="numeric-text", hostile_on=("models",))
    with pytest.raises(UserError, match=r"model list at http://127.0.0.1:\d+/v1: .*key 'data.\d+.id'"):
        generate(_endpoint(stub), tok, _items()[:1], max_new_tokens=2, progress=False, backend="openai")
    assert stub.requests == []


def test_more_tokens_than_asked_for_is_refused(tiny, served, monkeypatch):
    _, tok = tiny
    stub = served()
    original = stub.answer

    def inflated(body, number, auth=""):
        status, answer = original(body, number, auth)
        answer["usage"]["completion_tokens"] = 10_000
        return status, answer

    monkeypatch.setattr(stub, "answer", inflated)
    with pytest.raises(UserError, match="counted 10000 completion tokens for a request of at most 2"):
        generate(_endpoint(stub), tok, _items()[:1], max_new_tokens=2, progress=False, backend="openai")


def test_a_model_list_the_server_refuses_is_not_retried(tiny, served, monkeypatch):
    """A 401 on GET /models (a wrong key) fails at once, like a 401 on a completion, with the key masked."""
    from http import HTTPStatus

    _, tok = tiny
    stub = served()
    monkeypatch.setenv("GEN_KEY_TEST", "sk-gen-list-4401")
    calls = []
    handler = stub.server.RequestHandlerClass

    def refuse(self):
        calls.append(self.path)
        self._send(HTTPStatus.UNAUTHORIZED, {"error": {"message": f"bad key {self.headers.get('Authorization')}"}})

    monkeypatch.setattr(handler, "do_GET", refuse)
    with pytest.raises(UserError, match=r"model list at .* failed after 1 attempt: StatusError: HTTP 401: .*Bearer \*\*\*"):
        generate(_endpoint(stub, api_key_env="GEN_KEY_TEST"), tok, _items()[:1], max_new_tokens=2, progress=False,
                 backend="openai")
    assert len(calls) == 1
