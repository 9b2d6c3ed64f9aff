"""Run by torchrun from test_async_rollouts.py on 2 CPU processes (gloo): RASFT with vLLM's server-mode backend in
front of a fake `trl vllm-serve` client, with `max_staleness` 0 (TRL's own server branch of
`VLLMGeneration.generate`) and 1 (`VLLMBackend.request`: prompts gathered and completions broadcast on the main
thread, the HTTP call on the prefetch thread), `learning_rate=0`. Rank 0 writes what both runs logged."""

import json
import sys
import threading
import types

from datasets import Dataset
from tiny import math_rows
from trl.generation.vllm_generation import VLLMGeneration

from rasft_trl import RASFTConfig, RASFTTrainer
from rasft_trl.generation.vllm_backend import VLLMBackend


class FakeClient:
    """`trl vllm-serve`'s client: sample k of a prompt is its last 2 tokens, k and EOS, padded after the EOS."""

    def __init__(self, eos):
        self.eos, self.threads = eos, []

    def generate(self, prompts, n, features=None, **sampling):
        self.threads.append(threading.current_thread().name)
        completions = [list(p[-2:]) + [k, self.eos, 0] for p in prompts for k in range(n)]
        return {"prompt_ids": prompts, "completion_ids": completions, "logprobs": None}


def correct_if_even(prompts, completions, completion_ids=None, **columns):
    return [float(sum(ids) % 2 == 0) for ids in completion_ids]


def run(model_dir, out_dir, staleness):
    args = RASFTConfig(
        output_dir=out_dir, max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=0.0, bf16=False, gradient_checkpointing=False, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=True, num_rollouts=2, max_length=128, calibration_sample_size=12,
        window_start_quantiles=[0.2, 0.8], window_end_quantiles=[0.2, 0.8], seed=1, max_staleness=staleness,
        mask_truncated_completions=False,
    )
    trainer = RASFTTrainer(model_dir, args, Dataset.from_dict(math_rows(12)), reward_funcs=correct_if_even)
    eos = trainer.processing_class.eos_token_id
    client = FakeClient(eos) if trainer.accelerator.is_main_process else None
    generation = types.SimpleNamespace(
        mode="server", tensor_parallel_size=1, vllm_client=client, accelerator=trainer.accelerator,
        enable_sleep_mode=False, repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=0, min_p=None,
        max_completion_length=8, logprobs=None, structured_outputs_regex=None, generation_kwargs={},
    )
    generation.generate = types.MethodType(VLLMGeneration.generate, generation)  # TRL's own server branch
    generation.sync_weights = lambda: None
    trainer._generation_backend = VLLMBackend(generation, trainer.accelerator, [eos], [eos])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    keys = ("loss", "rollouts/problems", "rollouts/drawn", "rollouts/targets", "sample/staleness_mean")
    return {key: [h[key] for h in logs] for key in keys}, (client.threads if client else None)


if __name__ == "__main__":
    model_dir, out_dir, result_path = sys.argv[1:4]
    results = {str(s): run(model_dir, f"{out_dir}/s{s}", s) for s in (0, 1)}
    import torch.distributed as dist

    if dist.get_rank() == 0:
        with open(result_path, "w") as f:
            json.dump(results, f)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("rasft-rollouts")]
    assert not alive, alive

    from rasft_trl.distributed import end_distributed, exit_launched_process

    end_distributed()
    exit_launched_process()  # skip the C-level shutdown where gloo threads can abort
