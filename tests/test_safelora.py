"""SafeLoRA's projection on the tiny model: the formula, which layers it projects, and that a projected
layer's update becomes exactly C·ΔW while every other weight stays as it was."""

from __future__ import annotations

import pytest
import torch

from lookahead_tuning.train.safelora import alignment_projection, project_lora, similarity, summary


def test_alignment_projection_is_v_vt_over_the_frobenius_norm():
    torch.manual_seed(0)
    base, aligned = torch.randn(6, 4), torch.randn(6, 4)
    v = (aligned - base).double()
    expected = v @ v.T / torch.sqrt((v * v).sum())
    assert torch.allclose(alignment_projection(aligned, base), expected)
    assert alignment_projection(base, base) is None  # alignment left the layer alone: no direction


def test_similarity_is_one_inside_the_subspace_zero_outside_and_undefined_without_an_update():
    u, z, w = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([1.0, 2.0])
    c = alignment_projection(torch.outer(u, w), torch.zeros(3, 2))  # V = u wᵀ: C = |w| u uᵀ
    inside, outside, half = torch.outer(u, w), torch.outer(z, w), torch.outer(u + z, w)
    assert similarity(inside.double(), c @ inside.double()) == pytest.approx(1.0)
    assert similarity(outside.double(), c @ outside.double()) == 0.0
    assert similarity(half.double(), c @ half.double()) == pytest.approx(2 ** -0.5)
    assert similarity(torch.zeros(3, 2).double(), c @ torch.zeros(3, 2).double()) is None


def _tiny_seed_and_lora(tiny_model_dir):
    """The tiny model as the pre-alignment base; a copy whose q_proj of layer 0 moved along one output
    direction u as the aligned seed; LoRA on q_proj and v_proj with chosen updates."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    q0 = seed.model.layers[0].self_attn.q_proj.weight
    out_dim, in_dim = q0.shape
    u = torch.zeros(out_dim)
    u[0] = 1.0
    with torch.no_grad():
        q0.add_(torch.outer(u, torch.linspace(-1, 1, in_dim)))
        seed.model.layers[1].self_attn.q_proj.weight.add_(0.01 * torch.randn_like(seed.model.layers[1].self_attn.q_proj.weight))
    model = get_peft_model(seed, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for module in model.modules():
        if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
            with torch.no_grad():
                module.lora_B["default"].weight.normal_()
    return base, model, u


def test_project_lora_projects_the_layers_below_the_threshold_and_nothing_else(tiny_model_dir):
    base, model, u = _tiny_seed_and_lora(tiny_model_dir)
    attn0 = model.base_model.model.model.layers[0].self_attn.q_proj
    z = torch.zeros_like(u)
    z[1] = 1.0
    with torch.no_grad():  # layer 0's update: half inside the alignment direction u, half outside
        attn0.lora_B["default"].weight.copy_(torch.stack([u + z, u + z], dim=1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    delta0 = attn0.lora_B["default"].weight.detach().double() @ attn0.lora_A["default"].weight.detach().double()
    c0 = alignment_projection(attn0.base_layer.weight, base.state_dict()["model.layers.0.self_attn.q_proj.weight"])

    decisions = {d.name: d for d in project_lora(model, base.state_dict(), threshold=0.8)}
    assert set(decisions) == {f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")}
    q0 = decisions["model.layers.0.self_attn.q_proj"]
    assert q0.similarity == pytest.approx(2 ** -0.5, abs=1e-6) and q0.projected
    after0 = attn0.lora_B["default"].weight.double() @ attn0.lora_A["default"].weight.double()
    assert torch.allclose(after0, c0 @ delta0, atol=1e-5)  # the update is now exactly C·ΔW
    # v_proj was not changed by "alignment": no direction, left alone
    assert all(decisions[f"model.layers.{i}.self_attn.v_proj"].similarity is None for i in (0, 1))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    projected = {f"base_model.model.{d.name}.lora_B.default.weight" for d in decisions.values() if d.projected}
    assert changed == projected and "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight" in changed


def test_a_layer_above_the_threshold_is_kept_and_the_summary_counts_decisions(tiny_model_dir):
    base, model, u = _tiny_seed_and_lora(tiny_model_dir)
    attn0 = model.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():  # an update along u only: similarity 1
        attn0.lora_B["default"].weight.copy_(torch.stack([u, 2 * u], dim=1))
    kept = attn0.lora_B["default"].weight.detach().clone()
    decisions = project_lora(model, base.state_dict(), threshold=0.8)
    assert torch.equal(attn0.lora_B["default"].weight, kept)
    record = summary(decisions, 0.8)
    assert record["layers"] == 4 and record["threshold"] == 0.8
    assert record["projected"] == sum(d["projected"] for d in record["decisions"])


def test_a_base_without_the_adapted_layer_is_an_error(tiny_model_dir):
    base, model, _ = _tiny_seed_and_lora(tiny_model_dir)
    weights = {k: v for k, v in base.state_dict().items() if "layers.1.self_attn.q_proj" not in k}
    with pytest.raises(KeyError, match="layers.1.self_attn.q_proj"):
        project_lora(model, weights, threshold=0.5)


# ----------------------------------------------------------------------------- in training

ROWS = [{"prompt": f"What is {a} plus {b}?", "completion": f"{a} + {b} = {a + b}.\n#### {a + b}"}
        for a, b in [(2, 3), (4, 1), (7, 5), (3, 3)]]


@pytest.fixture()
def aligned_seed(tmp_path, tiny_model_dir):
    """A stand-in for an aligned seed: the tiny model with moved attention weights, in a folder beside
    an align_summary.json that names the tiny model as its base (as `align` writes it)."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    seed = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in seed.model.layers:
            layer.self_attn.q_proj.weight.add_(0.05 * torch.randn_like(layer.self_attn.q_proj.weight))
            layer.self_attn.v_proj.weight.add_(0.05 * torch.randn_like(layer.self_attn.v_proj.weight))
    folder = tmp_path / "aligned-x"
    seed.save_pretrained(folder / "model")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder / "model")
    (folder / "align_summary.json").write_text(json.dumps({"base": str(tiny_model_dir)}))
    return folder / "model"


def _train_cfg(model, tmp_path, name, **kw):
    import json

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return {"model": str(model), "data": str(data), "out": str(tmp_path / name), "batch_size": 4, "max_steps": 2,
            "max_length": 64, "lr": 1e-2, "quiet": True, "lora": True, "lora_r": 2,
            "lora_target_modules": "q_proj,v_proj", "warmup_ratio": 0.0, **kw}


def test_the_safelora_method_projects_the_trained_update_before_saving(tmp_path, tiny_model_dir, aligned_seed,
                                                                        one_torch_thread):
    """The same training with and without SafeLoRA: every layer it reports projected holds C·B of the
    unprojected run's B, every other adapter weight is the unprojected run's."""
    from safetensors.torch import load_file

    from lookahead_tuning.train.api import train

    plain = train(_train_cfg(aligned_seed, tmp_path, "plain"))
    safe = train(_train_cfg(aligned_seed, tmp_path, "safe", method="safelora", safelora_threshold=0.99))
    record = safe["safelora"]
    assert "safelora" not in plain and record["base"] == str(tiny_model_dir) and record["layers"] == 4
    assert 0 < record["projected"] <= 4 and record["threshold"] == 0.99
    before = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    after = load_file(tmp_path / "safe" / "adapter_model.safetensors")
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    seed = AutoModelForCausalLM.from_pretrained(aligned_seed).state_dict()
    projected = {d["name"] for d in record["decisions"] if d["projected"]}
    for key, value in before.items():
        layer = next((n for n in projected if f".{n}.lora_B." in f".{key}"), None)
        if layer is None:
            assert torch.equal(after[key], value), key
        else:
            c = alignment_projection(seed[f"{layer}.weight"], base[f"{layer}.weight"])
            assert torch.allclose(after[key].double(), c @ value.double(), atol=1e-6), key


def test_safelora_needs_lora_and_a_base(tmp_path, tiny_model_dir):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.train.api import train

    with pytest.raises(UserError, match="SafeLoRA projects a LoRA update: set lora: true"):
        train(_train_cfg(tiny_model_dir, tmp_path, "no-lora", method="safelora", lora=False))
    with pytest.raises(UserError, match="set safelora_base"):
        train(_train_cfg(tiny_model_dir, tmp_path, "no-base", method="safelora"))
    assert not (tmp_path / "no-base").exists()  # refused before the run folder was made


def test_a_run_with_safelora_without_lora_is_refused_before_any_cell(tmp_path, tiny_model_dir):
    from lookahead_tuning.errors import UserError
    from lookahead_tuning.experiment.config import make_experiment
    from lookahead_tuning.experiment.runner import preflight

    cfg = make_experiment({"model": str(tiny_model_dir), "tasks": [{"name": "math", "n_train": 4, "n_test": 2}],
                           "methods": ["vanilla", "safelora"]})
    with pytest.raises(UserError, match="math--safelora--seed0: SafeLoRA projects a LoRA update"):
        preflight(cfg, tmp_path / "run")
    preflight(make_experiment({**cfg.model_dump(mode="json"), "train": {"lora": True}}), tmp_path / "run")
