"""QLoRA end to end on the CPU: a 4-bit NF4 base through bitsandbytes, a LoRA adapter, and the reference = the same
quantized network with the adapter disabled (no second copy)."""

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import PatternVerifier, make_args
from tiny import math_rows

from rasft_trl import RASFTTrainer
from rasft_trl.data import Trajectory, collate_trajectories, tokenize_prompt

bitsandbytes = pytest.importorskip("bitsandbytes")  # in the dev extra: CI runs this test

QUANTIZATION = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32",
                "bnb_4bit_use_double_quant": False}


def test_qlora_trains_only_the_adapter_and_its_reference_is_the_quantized_base(tmp_path, tiny_wide_model_dir):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    args = make_args(tmp_path, max_steps=3, gradient_accumulation_steps=1, window_recalibration_steps=1,
                     model_init_kwargs={"quantization_config": QUANTIZATION, "dtype": "float32"})
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = RASFTTrainer(tiny_wide_model_dir, args, Dataset.from_dict(math_rows(8)), peft_config=peft_config,
                           verifier=PatternVerifier([1.0, 0.0]))
    quantized = [m for m in trainer.model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert quantized and trainer.ref_model is None  # 4-bit layers; no second copy for the reference
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}

    tokenizer = AutoTokenizer.from_pretrained(tiny_wide_model_dir)
    rows = math_rows(3)
    trajectories = [Trajectory(tokenize_prompt(tokenizer, p),
                               tokenizer(c, add_special_tokens=False)["input_ids"], i, True)
                    for i, (p, c) in enumerate(zip(rows["prompt"], rows["completion"]))]

    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(h["rollouts/drawn"] > 0 for h in logs) and sum(h["rollouts/targets"] for h in logs)

    # Only the adapter trains: it is all the optimizer holds, every adapter matrix moved, and every other
    # unquantized tensor (norms, embeddings, head) is bit-identical. The 4-bit weights are checked through the
    # reference below: bitsandbytes' CPU kernel repacks their storage in place on the first forward, so their raw
    # bytes are not comparable.
    lora = {n for n in before if "lora_" in n}
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    optimized = {names[id(p)] for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == lora == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    params = dict(trainer.model.named_parameters())
    assert all(not torch.equal(before[n], params[n].detach()) for n in lora if "lora_B" in n)
    plain = [n for n, p in params.items() if n not in lora and not isinstance(p, bitsandbytes.nn.Params4bit)]
    assert plain and all(torch.equal(before[n], params[n].detach()) for n in plain)

    # the reference (adapter disabled) gives the log-probs of a freshly loaded 4-bit base model; the policy differs
    reference = trainer._run_reference(trajectories)
    base = AutoModelForCausalLM.from_pretrained(
        tiny_wide_model_dir, quantization_config=BitsAndBytesConfig(**QUANTIZATION), dtype=torch.float32,
        device_map={"": "cpu"},
    ).eval()
    batch = collate_trajectories(trajectories, tokenizer.pad_token_id)
    with torch.no_grad():
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    expected = torch.gather(logits.log_softmax(-1), 2, batch["labels"][:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
    for i, values in enumerate(reference):
        mask = batch["completion_mask"][i].bool()
        assert torch.allclose(values, expected[i][mask], atol=1e-4), (i, (values - expected[i][mask]).abs().max())
    (logps, first), = list(trainer._score(trainer.model, trajectories[:1]))
    policy = logps[0].float().cpu()[first["completion_mask"][0].bool().cpu()]
    assert not torch.allclose(policy, reference[0], atol=1e-4)  # the trained adapter changes the policy
