"""Run by `accelerate launch` (2 CPU processes, ZeRO-3 or FSDP2) from test_sharded.py: rollouts from the transformers
backend when the processes' rollouts end at different lengths and one process has no prompt at all.

Process 0 samples 3 prompts x 2 rollouts that run 12 tokens; process 1 has none (it pads with a filler prompt) and
its rollouts would end after one token (as if they all hit EOS at once). With sharded
weights a forward is a collective, so unless the backend keeps the processes' decoding steps together this hangs.
Writes `rank<k>.json` with what each process got and how many forwards (decoding steps) it ran per `generate`
call: they must be equal, whatever each process's own rollouts needed (mismatched collectives do not always hang:
they can pair up with the next ones and corrupt them silently, so the count is what the test checks).

    python sharded_generate_worker.py MODEL_DIR OUT_DIR
"""

import json
import os
import sys

from datasets import Dataset
from tiny import math_rows
from transformers import AutoTokenizer, TrainerCallback

from rasft_trl import RASFTConfig, RASFTTrainer
from rasft_trl.distributed import end_distributed, exit_launched_process, sharding_engine
from rasft_trl.generation.base import SamplingSettings
from rasft_trl.generation.transformers_backend import TransformersGeneration


PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
NEW_TOKENS = 12


class GenerateAtStart(TrainerCallback):
    """At the start of training (the model is wrapped by its engine by then), sample through the backend."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.trainer = None

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = self.trainer
        tokenizer = trainer.processing_class
        rank = trainer.accelerator.process_index
        default = trainer.generation_backend
        # process 0's rollouts run 12 tokens; process 1's would end after 1 (as if every one hit EOS at once)
        backend = TransformersGeneration(
            trainer.model_wrapped, trainer.accelerator,
            SamplingSettings(temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                             max_new_tokens=NEW_TOKENS if rank == 0 else 1),
            pad_token_id=tokenizer.pad_token_id, eos_token_ids=[tokenizer.eos_token_id],
            is_fsdp=default.is_fsdp, fsdp_reshard_after_forward=default.fsdp_reshard_after_forward,
            generation_kwargs={"min_new_tokens": NEW_TOKENS} if rank == 0 else None,
        )
        prompts = PROMPTS if rank == 0 else []
        forwards = []
        handle = trainer.accelerator.unwrap_model(trainer.model_wrapped).register_forward_pre_hook(
            lambda module, inputs: forwards.__setitem__(-1, forwards[-1] + 1))
        forwards.append(0)
        completions = backend.generate(prompts, 2)
        forwards.append(0)
        second = backend.generate(prompts[:1], 2)  # after the first call resharded the model, again
        # greedy rollouts (compared by the test with those of the plain model loaded from disk: the parameters the
        # backend gathered for generation must be the real weights)
        backend.generation_config.do_sample = False
        forwards.append(0)
        greedy = backend.generate(prompts, 1)
        handle.remove()
        with open(os.path.join(self.out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"engine": sharding_engine(trainer), "lengths": [len(c) for c in completions],
                       "second": [len(c) for c in second], "decoding_forwards": forwards, "greedy": greedy}, f)


if __name__ == "__main__":
    model_dir, out_dir = sys.argv[1:3]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    args = RASFTConfig(output_dir=out_dir, max_steps=1, per_device_train_batch_size=1, bf16=False,
                       gradient_checkpointing=False, report_to="none", use_cpu=True, save_strategy="no",
                       num_rollouts=2, max_length=128, calibration_sample_size=2)
    callback = GenerateAtStart(out_dir)
    trainer = RASFTTrainer(model_dir, args, Dataset.from_dict(math_rows(2)), processing_class=tokenizer,
                           verifier=lambda prompts, completions, **kw: [0.0] * len(completions),
                           callbacks=[callback])
    callback.trainer = trainer
    trainer.train()  # one step after the check: the engine still trains
    end_distributed()  # see rasft_trl.distributed.end_distributed
    exit_launched_process()  # skip the C-level shutdown where gloo threads can abort
