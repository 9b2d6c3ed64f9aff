"""Run by `torch.distributed.run` from test_distributed.py: a few RASFT steps on 2 CPU processes whose prompt counts
differ per step (rollouts routed at random, unequal calibration shards, unequal pools), recording per rank and step
the model forwards outside generation, the `generate` calls and the ordered Python-level collectives.

Under ZeRO-3 or FSDP every forward and every `generate` call is a collective (parameters are gathered), so they must
agree across ranks; the record is written to `<out>/rank<k>.json`."""

import functools
import json
import os
import sys

import torch
import torch.distributed as dist
from datasets import Dataset
from tiny import math_rows
from transformers import TrainerCallback

from rasft_trl import RASFTConfig, RASFTTrainer

COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_gather_object", "all_reduce", "broadcast",
               "broadcast_object_list", "reduce", "gather", "scatter", "barrier", "reduce_scatter_tensor")


class Recorder(TrainerCallback):
    def __init__(self):
        self.current = {"forwards": 0, "generate_calls": 0, "prompts": 0, "collectives": []}
        self.steps = []
        self.in_generate = False

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(self.current)
        self.current = {"forwards": 0, "generate_calls": 0, "prompts": 0, "collectives": []}


def instrument(recorder: Recorder) -> None:
    for name in COLLECTIVES:
        original = getattr(dist, name)

        @functools.wraps(original)
        def counted(*args, _original=original, _name=name, **kwargs):
            recorder.current["collectives"].append(_name)
            return _original(*args, **kwargs)

        setattr(dist, name, counted)


def content_verifier(prompts, completions, completion_ids=None, **columns):
    return [float(sum(ids) % 3 == 0) for ids in completion_ids]


def main(model_dir: str, out_dir: str, mode: str) -> None:
    recorder = Recorder()
    instrument(recorder)
    args = RASFTConfig(
        output_dir=os.path.join(out_dir, "run"), max_steps=4, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, learning_rate=1e-3, warmup_steps=0, bf16=False, gradient_checkpointing=False,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=int(os.environ["LOCKSTEP_SEED"]),
        num_rollouts=2, max_new_tokens=4, max_length=128, mask_truncated_completions=False,
        calibration_sample_size=5,  # shards of 3 and 2 problems: 2 and 1 scoring chunks
        window_start_quantiles=[0.0, 1.0], window_end_quantiles=[0.0, 1.0],
        rollout_fraction=0.5,  # each rank routes its own random half of the problems
        window_recalibration_steps=2,
    )
    peft_config = None
    if mode == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = RASFTTrainer(model_dir, args, Dataset.from_dict(math_rows(16)), verifier=content_verifier,
                           peft_config=peft_config, callbacks=[recorder])
    inner = trainer.accelerator.unwrap_model(trainer.model)
    causal_lm = inner.get_base_model() if hasattr(inner, "get_base_model") else inner

    def pre_forward(module, args, kwargs):
        if not recorder.in_generate:
            recorder.current["forwards"] += 1

    causal_lm.register_forward_pre_hook(pre_forward, with_kwargs=True)
    if trainer.ref_model is not None:  # full fine-tuning: a frozen copy (under ZeRO-3 / FSDP sharded as well)
        trainer.ref_model.register_forward_pre_hook(pre_forward, with_kwargs=True)
    generate = inner.generate

    @functools.wraps(generate)
    def counted_generate(*args, **kwargs):
        recorder.current["generate_calls"] += 1
        recorder.in_generate = True
        try:
            return generate(*args, **kwargs)
        finally:
            recorder.in_generate = False

    inner.generate = counted_generate
    rollouts = trainer._rollouts

    def counted_prompts(rows, experts, selected):
        recorder.current["prompts"] += int(selected.sum())
        return rollouts(rows, experts, selected)

    trainer._rollouts = counted_prompts
    trainer.train()
    with open(os.path.join(out_dir, f"rank{trainer.accelerator.process_index}.json"), "w") as f:
        json.dump(recorder.steps, f)


if __name__ == "__main__":
    from rasft_trl.distributed import end_distributed, exit_launched_process

    main(*sys.argv[1:4])
    end_distributed()  # see rasft_trl.distributed.end_distributed
    exit_launched_process()  # skip the C-level shutdown where gloo threads can abort
