"""Run by `accelerate launch` from test_distributed.py: one RASFT optimizer step, gradients saved by rank 0."""

import sys

import torch
from datasets import Dataset
from tiny import math_rows
from transformers import TrainerCallback

from rasft_trl import RASFTConfig, RASFTTrainer


class EchoBackend:
    """Deterministic generation backend: sample k of a prompt is the prompt's last k+2 tokens plus EOS.

    Sampling differs between one process and two; the test is about loss normalization, so rollouts must not."""

    def __init__(self, eos):
        self.eos = eos

    def generate(self, prompt_ids, num_samples):
        return [list(p[-(k + 2):]) + [self.eos] for p in prompt_ids for k in range(num_samples)]

    def sync_weights(self):
        pass


def correct_if_long(prompts, completions, completion_ids=None, **columns):
    return [1.0 if len(ids) % 2 == 0 else 0.0 for ids in completion_ids]


class GradCapture(TrainerCallback):
    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def run(model_dir, out_dir, batch_size, accumulation, aggregation="token_mean"):
    capture = GradCapture()
    args = RASFTConfig(
        output_dir=out_dir, max_steps=1, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=1e-3, warmup_steps=0, bf16=False,
        gradient_checkpointing=False, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
        num_rollouts=2, max_length=128, calibration_sample_size=4, window_start_quantiles=[0.0, 1.0],
        window_end_quantiles=[0.0, 1.0], max_grad_norm=0.0, seed=0, loss_aggregation=aggregation,
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = RASFTTrainer(
        model_dir, args, Dataset.from_dict(math_rows(4)), processing_class=tokenizer, verifier=correct_if_long,
        generation_backend=EchoBackend(tokenizer.eos_token_id), callbacks=[capture],
    )
    trainer.train()
    return trainer, capture.grads


if __name__ == "__main__":
    from rasft_trl.distributed import end_distributed, exit_launched_process

    model_dir, out_dir, aggregation, grads_path = sys.argv[1:5]
    trainer, grads = run(model_dir, out_dir, 1, 2, aggregation)  # 2 processes x batch 1 x accumulation 2
    if trainer.accelerator.is_main_process:
        torch.save({"grads": grads, "log": trainer.state.log_history[0]}, grads_path)
    end_distributed()  # see rasft_trl.distributed.end_distributed
    exit_launched_process()  # skip the C-level shutdown where gloo threads can abort
