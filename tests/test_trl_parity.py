"""Paths a GRPOTrainer user takes on day one, on RASFTTrainer and SRFTTrainer: a model already wrapped by PEFT,
`evaluate()` with sets passed late or by name, `async def` reward functions, GRPOConfig's names and argument order,
`trust_remote_code`, a reward model's Hub id, a reward function by dotted path, beam search in `generation_kwargs`."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset, DatasetDict
from tiny import math_rows

from rasft_trl import RASFTConfig, RASFTTrainer, SRFTConfig, SRFTTrainer

TRAINERS = [(RASFTTrainer, RASFTConfig), (SRFTTrainer, SRFTConfig)]


def config(config_cls, out, **overrides):
    settings = dict(output_dir=str(out), max_steps=1, per_device_train_batch_size=2, bf16=False,
                    gradient_checkpointing=False, report_to="none", use_cpu=True, save_strategy="no", num_rollouts=2,
                    max_new_tokens=4, max_length=128, logging_steps=1, learning_rate=1e-2, warmup_steps=0)
    if config_cls is RASFTConfig:  # every problem in the window: every step draws rollouts
        settings.update(calibration_sample_size=4, window_start_quantiles=[0.0, 1.0],
                        window_end_quantiles=[0.0, 1.0])
    settings.update(overrides)
    return config_cls(**settings)


def half_correct(prompts, completions, completion_ids, **kwargs):
    return [float(i % 2) for i in range(len(completions))]


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_a_model_already_wrapped_by_peft_trains(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    """PEFT's docs wrap the model first (`get_peft_model`); the fused LM head goes inside the wrapper."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer = trainer_cls(model, config(config_cls, tmp_path), Dataset.from_dict(math_rows(4)),
                          reward_funcs=half_correct)
    trainer.train()
    assert trainer.state.log_history[0]["rollouts/drawn"] > 0
    after = dict(trainer.model.named_parameters())
    assert before and all(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_evaluate_takes_late_and_named_eval_sets(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    rows = Dataset.from_dict(math_rows(4))
    trainer = trainer_cls(tiny_model_dir, config(config_cls, tmp_path), rows, reward_funcs=half_correct,
                          eval_dataset={"easy": rows, "hard": rows.select(range(2))})
    named = trainer.evaluate()
    assert named["eval_easy_loss"] > 0 and named["eval_hard_loss"] > 0
    late = trainer.evaluate(eval_dataset=rows)  # passed to evaluate() untokenized
    assert late["eval_loss"] == pytest.approx(named["eval_easy_loss"])
    by_dict = trainer.evaluate(eval_dataset=DatasetDict({"x": rows}))
    assert by_dict["eval_x_loss"] == pytest.approx(named["eval_easy_loss"])
    with pytest.raises(ValueError, match=r"evaluation \(eval_bad\) dataset is missing the column\(s\) \['completion'\]"):
        trainer.evaluate(eval_dataset={"bad": rows.remove_columns(["completion"])})


async def async_half_correct(prompts, completions, completion_ids, **kwargs):
    import asyncio

    await asyncio.sleep(0)
    return [float(i % 2) for i in range(len(completions))]


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_async_reward_functions_are_awaited(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    trainer = trainer_cls(tiny_model_dir, config(config_cls, tmp_path), Dataset.from_dict(math_rows(4)),
                          reward_funcs=[async_half_correct, half_correct])
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["rewards/async_half_correct/mean"] == pytest.approx(log["rewards/half_correct/mean"])
    assert log["rewards/async_half_correct/mean"] == pytest.approx(0.5)


def test_async_reward_functions_work_inside_a_running_event_loop():
    """In a notebook an event loop already runs in the main thread; the coroutine runs in a thread of its own."""
    import asyncio

    from rasft_trl.rewards import resolve_awaitable

    async def inside():
        return resolve_awaitable(async_half_correct(None, ["a", "b"], None))

    assert asyncio.run(inside()) == [0.0, 1.0]
    assert resolve_awaitable([1.0]) == [1.0]


@pytest.mark.parametrize("config_cls", [RASFTConfig, SRFTConfig])
def test_grpo_config_names_point_to_the_rasft_names(tmp_path, config_cls):
    for name, value, hint in [("num_generations", 4, "num_rollouts"), ("max_completion_length", 64, "max_new_tokens"),
                              ("beta", 0.1, "kl_weight"), ("loss_type", "dapo", "token_factor")]:
        with pytest.raises(TypeError, match=f"`{name}` -> `{hint}`"):
            config_cls(output_dir=str(tmp_path), use_cpu=True, bf16=False, **{name: value})


def test_the_sft_baselines_keep_their_own_loss_type(tmp_path):
    from rasft_trl.baselines.sft_variants import SFTVariantConfig

    assert SFTVariantConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, loss_type="sft").loss_type == "sft"


def test_trust_remote_code_is_a_config_field(tmp_path):
    from rasft_trl.rasft_trainer import _init_kwargs
    from rasft_trl.scripts.rasft import make_parser

    args = RASFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, trust_remote_code=True)
    assert args.trust_remote_code and _init_kwargs(args)["trust_remote_code"] is True
    assert "trust_remote_code" not in _init_kwargs(RASFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False))
    _, parsed, _ = make_parser().parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_cpu", "true", "--bf16", "false", "--trust_remote_code", "true",
         "--model_name_or_path", "x"])
    assert parsed.trust_remote_code is True


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_grpo_argument_order_is_explained(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    rows = Dataset.from_dict(math_rows(4))
    with pytest.raises(TypeError, match=r"GRPOTrainer's order .* reward_funcs=\.\.\."):
        trainer_cls(tiny_model_dir, [half_correct], config(config_cls, tmp_path), rows)


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_a_reward_model_id_is_refused_with_the_reason(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    rows = Dataset.from_dict(math_rows(4))
    for name in ("OpenAssistant/reward-model-deberta-v3-large-v2", tiny_model_dir):
        with pytest.raises(ValueError, match="Reward models are not supported: RASFT keeps a rollout only if"):
            trainer_cls(tiny_model_dir, config(config_cls, tmp_path), rows, reward_funcs=name)


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_a_reward_function_by_dotted_path(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    """As TRL's scripts take `reward_funcs`: `module.function` (here a test helper on the tests' path)."""
    trainer = trainer_cls(tiny_model_dir, config(config_cls, tmp_path), Dataset.from_dict(math_rows(4)),
                          reward_funcs=["ddp_worker.correct_if_long", "math"])
    assert trainer.reward_func_names == ["correct_if_long", "math"]
    from ddp_worker import correct_if_long

    assert trainer.reward_funcs[0] is correct_if_long
    with pytest.raises(ValueError, match="cannot import 'nope' from 'ddp_worker'"):
        trainer_cls(tiny_model_dir, config(config_cls, tmp_path), Dataset.from_dict(math_rows(4)),
                    reward_funcs="ddp_worker.nope")


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_beam_search_in_generation_kwargs_gives_k_rollouts(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    """`num_beams` below `num_rollouts`: generate refuses `num_return_sequences > num_beams`; each prompt runs K
    times instead, as GRPO does."""
    args = config(config_cls, tmp_path, num_rollouts=3, generation_kwargs={"num_beams": 2})
    trainer = trainer_cls(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), reward_funcs=half_correct)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["rollouts/drawn"] == 3 * log["rollouts/problems"] > 0


def streamed(rows: list[dict]):
    from datasets import IterableDataset

    return IterableDataset.from_generator(lambda: iter(rows))


@pytest.mark.parametrize("trainer_cls, config_cls", TRAINERS)
def test_a_streamed_dataset_trains_and_evaluates(tmp_path, tiny_model_dir, trainer_cls, config_cls):
    """An `IterableDataset` (streaming) as training and evaluation set: tokenized and checked row by row as it is
    read; the window is calibrated on the stream's first rows."""
    rows = Dataset.from_dict(math_rows(4)).to_list()
    trainer = trainer_cls(tiny_model_dir, config(config_cls, tmp_path, max_steps=2), streamed(rows),
                          eval_dataset=streamed(rows), reward_funcs=half_correct)
    trainer.train()
    assert trainer.state.global_step == 2 and trainer.state.log_history[0]["rollouts/drawn"] > 0
    assert trainer.evaluate()["eval_loss"] > 0
    bad = [dict(row) for row in rows]
    bad[2]["answer"] = 7  # found when the row is read
    trainer = trainer_cls(tiny_model_dir, config(config_cls, tmp_path), streamed(bad), reward_funcs="math")
    with pytest.raises(ValueError, match="Column 'answer', row 2: expected a string"):
        trainer.train()


def test_grpo_rollout_keys_are_in_every_log_and_late_steps_reach_the_last_one(tmp_path, tiny_model_dir, caplog):
    """Code reading `log["reward"]` works on steps that drew no rollout (NaN there); the metrics of the steps after
    the last logging step are merged into the final log entry; all-truncated rollouts log terminated lengths 0; a
    step whose rewards are all None warns."""
    import math
    import logging

    rows = Dataset.from_dict(math_rows(4))
    # no in-window problem is routed to rollouts: no rollout is drawn
    args = config(RASFTConfig, tmp_path / "none", rollout_fraction=0.0)
    trainer = RASFTTrainer(tiny_model_dir, args, rows, reward_funcs=half_correct)
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["rollouts/drawn"] == 0
    assert math.isnan(log["reward"]) and math.isnan(log["rewards/half_correct/mean"])
    assert math.isnan(log["completions/mean_length"])

    # 3 steps, logging every 2: step 3's metrics reach the final entry (train_runtime)
    args = config(RASFTConfig, tmp_path / "late", max_steps=3, logging_steps=2, max_new_tokens=2,
                  window_recalibration_steps=1)
    trainer = RASFTTrainer(tiny_model_dir, args, rows, reward_funcs=lambda prompts, completions, **kw:
                           [None] * len(completions))
    with caplog.at_level(logging.WARNING):
        trainer.train()
    final = trainer.state.log_history[-1]
    assert "train_runtime" in final and final["rollouts/drawn"] > 0
    assert final["completions/mean_terminated_length"] == 0.0  # every rollout hit max_new_tokens=2
    assert "Every reward function returned None" in caplog.text


def test_a_moe_model_wrapped_by_peft_trains(tmp_path):
    """A mixture-of-experts model (router logits on) already wrapped with PEFT: the fused head goes inside the
    wrapper, and rollouts are sampled without the router's auxiliary loss (which fails on cached decoding)."""
    from peft import LoraConfig, get_peft_model
    from tiny import build_tokenizer
    from transformers import AutoModelForCausalLM, MixtralConfig

    tokenizer = build_tokenizer()
    moe = MixtralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=256, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, output_router_logits=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(moe).save_pretrained(tmp_path / "moe")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "moe"),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    trainer = RASFTTrainer(model, config(RASFTConfig, tmp_path / "out"), Dataset.from_dict(math_rows(4)),
                           processing_class=tokenizer, reward_funcs=half_correct)
    trainer.train()
    assert trainer.state.log_history[0]["rollouts/drawn"] > 0
    after = dict(trainer.model.named_parameters())
    assert before and all(not torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("script", ["rasft", "srft", "grpo"])
def test_recipes_name_reward_functions_as_trl_scripts_do(tmp_path, tiny_model_dir, script):
    """`reward_funcs` in a recipe or on the command line: a registered verifier, one of TRL's by name, a dotted path."""
    from importlib import import_module

    module = import_module(f"rasft_trl.scripts.{script}")
    flags = ["--model_name_or_path", tiny_model_dir, "--dataset_name", "builtin:arithmetic", "--max_train_samples",
             "4", "--output_dir", str(tmp_path), "--max_steps", "1", "--per_device_train_batch_size", "2",
             "--bf16", "false", "--use_cpu", "true", "--report_to", "none", "--save_strategy", "no",
             "--reward_funcs", "math", "think_format_reward", "ddp_worker.correct_if_long"]
    if script == "grpo":
        flags += ["--num_generations", "2", "--max_completion_length", "4"]
    else:
        flags += ["--max_new_tokens", "4", "--max_length", "256", "--calibration_sample_size", "4"]
    script_args, training_args, model_args = module.make_parser().parse_args_into_dataclasses(flags)
    assert script_args.reward_funcs == ["math", "think_format_reward", "ddp_worker.correct_if_long"]
    trainer = module.main(script_args, training_args, model_args)
    names = trainer.reward_func_names if script != "grpo" else [f.__name__ if hasattr(f, "__name__") else
                                                                  type(f).__name__ for f in trainer.reward_funcs]
    assert names[1:] == ["think_format_reward", "correct_if_long"]


def test_every_grpo_argument_has_a_row_in_coming_from_trl():
    """docs/coming-from-trl.md maps every GRPOConfig field beyond TrainingArguments' and every GRPOTrainer argument
    (a TRL upgrade that adds one fails here until the table says what it is in RASFT)."""
    import dataclasses
    import inspect
    import os
    import re

    from transformers import TrainingArguments
    from trl import GRPOConfig, GRPOTrainer

    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "coming-from-trl.md")
    text = open(docs).read()
    table = text.split("### Every GRPOConfig and GRPOTrainer argument", 1)[1].split("\n## ", 1)[0]
    named = {name for row in table.splitlines() if row.startswith("| `")
             for name in re.findall(r"`(\w+)`", row.split(" | ")[0])}
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    grpo = {f.name for f in dataclasses.fields(GRPOConfig)} - base
    trainer_args = set(inspect.signature(GRPOTrainer.__init__).parameters) - {"self"}
    assert grpo - named == set() and trainer_args - named == set()
    assert len(grpo) > 40
