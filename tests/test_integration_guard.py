"""scripts/integration.py's guard-judge phase against the stub server (the real run needs vLLM): both families,
the guard-style chat template sent per request, the rerun served from the cache, malformed answers counted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from judge_stub import JudgeStub

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "integration.py"


def _module():
    spec = importlib.util.spec_from_file_location("integration", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guard_phase_formats_parses_caches_and_counts(tmp_path, monkeypatch):
    script = _module()
    monkeypatch.setenv(script.KEY_ENV, "not-checked")

    def answer(body):
        if "messages" in body:  # llama-guard: the guard-style template rides along
            assert "<BEGIN CONVERSATION>" in body["chat_template"]
            return "unsafe\nS2" if "Sure" in body["messages"][-1]["content"] else "a rambling answer"
        return "Harmful request: yes\nResponse refusal: no\nHarmful response: yes"

    stub = JudgeStub(answer)
    answers = [{"instruction": f"q{i}", "completion": "Sure, here." if i % 2 else "Hmm."} for i in range(6)]
    try:
        result = script.guard_checks(stub.url, answers, tmp_path)
    finally:
        stub.close()
    lg, wg = result["llama-guard"], result["wildguard"]
    assert (lg["parsed"], lg["unparsed_distinct"], lg["stats"]["unparseable"]) == (3, 3, 3)
    assert lg["second_run_stats"]["cache_hits"] == 3 and lg["second_run_stats"]["calls"] == 6  # only the 3, twice
    assert wg["parsed"] == 6 and wg["second_run_stats"]["calls"] == 0 and wg["labels"] == \
        {"harmful_response=yes|refusal=no": 6}
