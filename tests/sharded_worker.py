"""Run by `accelerate launch` from test_sharded.py (2 CPU processes under DeepSpeed ZeRO-2 / ZeRO-3 or FSDP2), and
in-process for the single-process baseline: a few optimizer steps on deterministic rollouts, so that the losses of
one process and of a sharded run are comparable. Writes `result.json` (logged losses, the engine, the window
calibrations) and the final model to the output folder.

    python sharded_worker.py MODEL_DIR OUT_DIR METHOD MAX_STEPS SAVE_STEPS RESUME RECALIBRATE

METHOD: `rasft` (full fine-tuning with its frozen reference) or `sft_kl` (the SFT+KL baseline: the KL reads the
LM heads outside the forward). RESUME: `none` or `last`. RECALIBRATE: `window_recalibration_steps` (the tiny
model's expert NLLs are so close together that one update moves them all out of a window calibrated before it).
"""

import json
import os
import sys

from datasets import Dataset
from ddp_worker import EchoBackend, correct_if_long
from tiny import math_rows

from rasft_trl import RASFTConfig, RASFTTrainer
from rasft_trl.distributed import end_distributed, exit_launched_process, sharding_engine


def settings(out_dir, batch_size, accumulation, max_steps, save_steps, recalibrate):
    save = {"save_strategy": "steps", "save_steps": save_steps} if save_steps else {"save_strategy": "no"}
    return dict(
        output_dir=out_dir, max_steps=max_steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=2e-4, warmup_steps=0, bf16=False,
        gradient_checkpointing=False, logging_steps=1, report_to="none", use_cpu=True, seed=0, **save,
        num_rollouts=2, max_length=128, calibration_sample_size=12,
        # a real window: problems below and above it get no rollouts, so routing is part of what must agree
        window_start_quantiles=[0.2, 0.8], window_end_quantiles=[0.2, 0.8], rollout_fraction=1.0,
        hard_probe_ratio=0.0, window_recalibration_steps=recalibrate,
    )


def run(model_dir, out_dir, batch_size, accumulation, method="rasft", max_steps=3, save_steps=0, resume=None,
        recalibrate=1):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    common = dict(processing_class=tokenizer, generation_backend=EchoBackend(tokenizer.eos_token_id))
    dataset = Dataset.from_dict(math_rows(12))
    if method == "rasft":
        args = RASFTConfig(**settings(out_dir, batch_size, accumulation, max_steps, save_steps, recalibrate))
        trainer = RASFTTrainer(model_dir, args, dataset, verifier=correct_if_long, **common)
    elif method == "sft_kl":
        from rasft_trl.baselines.sft_variants import SFTVariantConfig, SFTVariantTrainer

        config = settings(out_dir, batch_size, accumulation, max_steps, save_steps, recalibrate)
        args = SFTVariantConfig(loss_type="sft_kl", kl_weight=0.5, **config)
        trainer = SFTVariantTrainer(model_dir, args, dataset, **common)
    else:
        raise ValueError(method)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(out_dir)
    if trainer.accelerator.is_main_process:
        logged = [h for h in trainer.state.log_history if "loss" in h]
        result = {
            "engine": sharding_engine(trainer),
            "processes": trainer.accelerator.num_processes,
            "steps": [h["step"] for h in logged],
            "losses": [h["loss"] for h in logged],
            "calibrations": [h.get("window/calibrations", 0) for h in logged],
            "rollout_problems": [h.get("rollouts/problems", 0) for h in logged],
            "targets": [h.get("rollouts/targets", 0) for h in logged],
        }
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(result, f)
    return trainer


if __name__ == "__main__":
    model_dir, out_dir, method, max_steps, save_steps, resume, recalibrate = sys.argv[1:8]
    # 2 processes x batch 1 x accumulation 2 = the single-process baseline's 1 x batch 4 x accumulation 1
    run(model_dir, out_dir, 1, 2, method, int(max_steps), int(save_steps), None if resume == "none" else True,
        int(recalibrate))
    end_distributed()  # see rasft_trl.distributed.end_distributed
    exit_launched_process()  # skip the C-level shutdown where gloo threads can abort
