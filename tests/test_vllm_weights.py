"""The vLLM backend's engine-independent parts: which weights are pushed, what is refused, lockstep padding.

These tests need no vLLM and run in every environment; the engine itself is tested in test_vllm.py.
"""

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from rasft_trl.generation.vllm_backend import VLLMBackend, stop_at
from rasft_trl.generation.vllm_weights import (
    check_weight_sync_supported,
    iter_merged_peft_weights,
    vllm_parameter_name,
)


def lora_model(model_dir, **lora_overrides):
    """A LoRA-wrapped tiny model whose adapters are non-zero (as after some training)."""
    from peft import LoraConfig, get_peft_model

    options = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "up_proj"], "task_type": "CAUSAL_LM"}
    options.update(lora_overrides)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(**options))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.05)
    return model


def base_snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_merged_weights_leave_the_base_bit_identical_and_equal_peft_merge(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    before = base_snapshot(model)
    pushed = dict(iter_merged_peft_weights(model))
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(before[name], param), f"base weight {name} changed"
    merged = copy.deepcopy(model).merge_and_unload().state_dict()
    assert pushed.keys() == merged.keys()
    for name, tensor in pushed.items():
        torch.testing.assert_close(tensor, merged[name], rtol=0, atol=1e-7, msg=name)
    assert not torch.equal(pushed["model.layers.0.self_attn.q_proj.weight"],
                           before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_control_in_place_merge_unmerge_changes_the_base(tiny_model_dir, dtype):
    """Why the merge is out of place: TRL's sync merges and unmerges in place, and (W + d) - d != W."""
    model = lora_model(tiny_model_dir).to(dtype)
    before = base_snapshot(model)
    model.merge_adapter()
    model.unmerge_adapter()
    changed = [n for n, p in model.named_parameters() if "lora_" not in n and not torch.equal(before[n], p)]
    assert changed, "merge/unmerge happened to be exact; the out-of-place merge would not be needed"


def test_vllm_parameter_names():
    assert vllm_parameter_name("base_model.model.model.layers.1.mlp.up_proj.base_layer.weight") == (
        "model.layers.1.mlp.up_proj.weight"
    )
    assert vllm_parameter_name("base_model.model.lm_head.modules_to_save.default.weight") == "lm_head.weight"
    assert vllm_parameter_name("model.layers.0._checkpoint_wrapped_module.mlp.down_proj.weight") == (
        "model.layers.0.mlp.down_proj.weight"
    )


@pytest.mark.parametrize("flag", ["is_loaded_in_4bit", "is_loaded_in_8bit"])
def test_quantized_policy_is_refused_before_any_engine_starts(flag):
    model = SimpleNamespace(**{flag: True})
    with pytest.raises(ValueError, match="use_vllm=False"):
        check_weight_sync_supported(model, is_fsdp=False)
    trainer = SimpleNamespace(model=model, is_fsdp_enabled=False, args=SimpleNamespace())
    with pytest.raises(ValueError, match="QLoRA"):
        VLLMBackend.from_trainer(trainer)


def test_lora_variants_and_fsdp_are_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="plain LoRA only"):
        check_weight_sync_supported(lora_model(tiny_model_dir, use_dora=True), is_fsdp=False)
    plain = lora_model(tiny_model_dir)
    check_weight_sync_supported(plain, is_fsdp=False)
    with pytest.raises(NotImplementedError, match="FSDP"):
        check_weight_sync_supported(plain, is_fsdp=True)


class FakeGeneration:
    """Stands in for TRL's VLLMGeneration: request i completes as [prompt[-1], 100 + i, eos, 7] (junk after eos)."""

    def __init__(self, mode, tensor_parallel_size=1, eos=2):
        self.mode, self.tensor_parallel_size, self.eos, self.calls = mode, tensor_parallel_size, eos, []

    def generate(self, prompts, images, num_generations):
        self.calls.append((prompts, num_generations))
        completions = [[p[-1], 100 + i, self.eos, 7] for i, p in enumerate(prompts)]
        return prompts, completions, None, None


class FakeAccelerator:
    """Two processes; `gather` returns this process's count next to the other process's."""

    def __init__(self, other_count, num_processes=2):
        self.num_processes, self.other_count, self.device = num_processes, other_count, torch.device("cpu")

    def gather(self, tensor):
        return torch.cat([tensor, torch.tensor([self.other_count])])


def test_server_mode_pads_to_the_global_maximum_and_drops_fillers():
    generation = FakeGeneration("server")
    backend = VLLMBackend(generation, FakeAccelerator(other_count=3), eos_token_ids=[2], filler_prompt=[2])
    out = backend.generate([[10, 11], [20]], num_samples=2)
    (prompts, k), = generation.calls
    assert k == 2
    # each prompt repeated K times contiguously, then one filler prompt (repeated K times) up to the global max of 3
    assert prompts == [[10, 11], [10, 11], [20], [20], [2], [2]]
    # the fillers' completions are dropped; completions are cut after EOS
    assert out == [[11, 100, 2], [11, 101, 2], [20, 102, 2], [20, 103, 2]]


def test_lockstep_with_nothing_anywhere_skips_generation_and_an_empty_rank_still_joins():
    generation = FakeGeneration("server")
    assert VLLMBackend(generation, FakeAccelerator(other_count=0), [2], [2]).generate([], 3) == []
    assert generation.calls == []
    assert VLLMBackend(generation, FakeAccelerator(other_count=2), [2], [2]).generate([], 3) == []
    assert [len(prompts) for prompts, _ in generation.calls] == [6]  # two fillers x K, outputs dropped


def test_colocate_without_tensor_parallelism_does_not_pad():
    generation = FakeGeneration("colocate")
    backend = VLLMBackend(generation, FakeAccelerator(other_count=5), [2], [2])
    assert backend.generate([], 2) == []
    assert backend.generate([[4]], 2) == [[4, 100, 2], [4, 101, 2]]
    assert generation.calls == [([[4], [4]], 2)]
    tensor_parallel = FakeGeneration("colocate", tensor_parallel_size=2)
    VLLMBackend(tensor_parallel, FakeAccelerator(other_count=2), [2], [2]).generate([[4]], 1)
    assert tensor_parallel.calls == [([[4], [2]], 1)]


def test_rollouts_stop_at_the_tokenizer_eos_only():
    assert stop_at(7) == {"ignore_eos": True, "stop_token_ids": [7]}


def test_from_trainer_passes_the_config_to_trl_and_syncs_once(monkeypatch, tmp_path):
    from rasft_trl import RASFTConfig
    from rasft_trl.generation import vllm_backend

    built = []

    class RecordingGeneration:
        lora_sync = None  # a policy without an adapter

        def __init__(self, **kwargs):
            self.kwargs, self.synced = kwargs, 0
            built.append(self)

        def sync_weights(self):
            self.synced += 1

    monkeypatch.setattr(vllm_backend, "RASFTVLLMGeneration", RecordingGeneration)
    args = RASFTConfig(
        output_dir=str(tmp_path), use_vllm=True, vllm_mode="server", vllm_server_base_url="http://127.0.0.1:9",
        temperature=0.7, top_p=0.8, top_k=20, min_p=0.05, repetition_penalty=1.3, max_new_tokens=33, vllm_enforce_eager=True,
        vllm_dtype="float32", vllm_max_model_length=640, vllm_gpu_memory_utilization=0.25, report_to="none",
        bf16=False, use_cpu=True,
    )
    trainer = SimpleNamespace(args=args, model=torch.nn.Linear(2, 2), accelerator=FakeAccelerator(0, 1),
                              processing_class=SimpleNamespace(eos_token_id=5), is_fsdp_enabled=False)
    backend = VLLMBackend.from_trainer(trainer)
    (generation,) = built
    kwargs = generation.kwargs
    sampling = (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"], kwargs["min_p"], kwargs["repetition_penalty"])
    assert sampling == (0.7, 0.8, 20, 0.05, 1.3)
    assert kwargs["max_completion_length"] == 33 and kwargs["logprobs"] is None  # token ids only
    assert kwargs["mode"] == "server" and kwargs["server_base_url"] == "http://127.0.0.1:9"
    assert kwargs["max_model_length"] == 640 and kwargs["gpu_memory_utilization"] == 0.25
    assert kwargs["llm_kwargs"] == {"enforce_eager": True, "dtype": "float32"}
    assert kwargs["lora_sync"] == "auto"
    assert kwargs["generation_kwargs"] == {"ignore_eos": True, "stop_token_ids": [5]}
    assert generation.synced == 1  # the engine loaded a checkpoint from disk: the policy is pushed once
    assert backend.eos_token_ids == [5] and backend.filler_prompt == [5]
