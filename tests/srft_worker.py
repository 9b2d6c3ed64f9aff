"""SRFT steps on scripted rollouts, in-process (one process) or under `torch.distributed.run` / `accelerate launch`
(2 CPU processes: DDP over gloo, ZeRO-2/3, FSDP2), so that runs with different process counts and micro-batch splits
train on the same rollouts and can be compared. Writes `result.json` (logged losses, the per-term metrics, entropy,
the engine) and, on request, the gradients of the first step.

    python srft_worker.py MODEL_DIR OUT_DIR BATCH ACCUMULATION MAX_STEPS [GRADS_PATH]
"""

import json
import os
import sys

import torch
from datasets import Dataset
from ddp_worker import GradCapture
from tiny import math_rows

from rasft_trl import SRFTConfig, SRFTTrainer
from rasft_trl.distributed import end_distributed, exit_launched_process, sharding_engine


class ScriptedBackend:
    """Sample k of a prompt: `k + 1` copies of the prompt's last token, then EOS. Equal in every run, whatever the
    process count or the batch split (sampling would differ)."""

    def __init__(self, eos):
        self.eos = eos

    def generate(self, prompt_ids, num_samples):
        return [[p[-1]] * (k + 1) + [self.eos] for p in prompt_ids for k in range(num_samples)]

    def sync_weights(self):
        pass


def odd_length_correct(prompts, completions, completion_ids=None, **columns):
    """1.0 for a completion of odd length (EOS included), else 0.0: samples 0 and 2 of each prompt are wrong."""
    return [1.0 if len(ids) % 2 else 0.0 for ids in completion_ids]


def config(out_dir, batch_size, accumulation, max_steps, **overrides):
    values = dict(
        output_dir=out_dir, max_steps=max_steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=1e-3, warmup_steps=0, bf16=False,
        gradient_checkpointing=False, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=0,
        num_rollouts=4, max_new_tokens=8, max_length=128, max_grad_norm=0.0,
    )
    values.update(overrides)
    return SRFTConfig(**values)


def run(model_dir, out_dir, batch_size, accumulation, max_steps=1, **overrides):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    capture = GradCapture()
    trainer = SRFTTrainer(
        model_dir, config(out_dir, batch_size, accumulation, max_steps, **overrides),
        train_dataset=Dataset.from_dict(math_rows(4 * max_steps)), processing_class=tokenizer,
        reward_funcs=odd_length_correct, generation_backend=ScriptedBackend(tokenizer.eos_token_id),
        callbacks=[capture],
    )
    trainer.train()
    trainer.save_model(out_dir)
    logged = [h for h in trainer.state.log_history if "loss" in h]
    result = {
        "engine": sharding_engine(trainer),
        "processes": trainer.accelerator.num_processes,
        "losses": [h["loss"] for h in logged],
        "terms": [{k: v for k, v in h.items() if k.startswith("srft/")} for h in logged],
    }
    if trainer.accelerator.is_main_process:
        with open(os.path.join(out_dir, "result.json"), "w") as handle:
            json.dump(result, handle)
    return trainer, result, capture.grads


if __name__ == "__main__":
    model_dir, out_dir, batch_size, accumulation, max_steps = sys.argv[1:6]
    trainer, _, grads = run(model_dir, out_dir, int(batch_size), int(accumulation), int(max_steps))
    if len(sys.argv) > 6 and trainer.accelerator.is_main_process:
        torch.save(grads, sys.argv[6])
    end_distributed()
    exit_launched_process()  # skip the C-level shutdown where gloo threads can abort
