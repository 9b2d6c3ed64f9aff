"""RASFT drops into code written for TRL: `reward_funcs` as GRPOTrainer takes them (TRL's own `accuracy_reward`
unchanged), TRL's metric names, a TRL model card, GRPO's config fields; and our verifiers work in GRPOTrainer."""

import math
import os

import pytest
import torch
from datasets import Dataset
from test_rasft_trainer import PatternVerifier, make_args
from tiny import math_rows

from rasft_trl import RASFTConfig, RASFTTrainer
from rasft_trl.rewards import combine_rewards, resolve_reward_funcs, trl_completions


def solution_rows(n):
    """A conversational dataset in the layout TRL's `accuracy_reward` reads (`solution`, no `answer`)."""
    rows = math_rows(n)
    return {"prompt": rows["prompt"], "completion": rows["completion"],
            "solution": [f"${a}$" for a in rows["answer"]]}


def test_trl_accuracy_reward_trains_rasft_and_the_model_card_names_rasft(tmp_path, tiny_model_dir):
    from trl.rewards import accuracy_reward

    args = make_args(tmp_path, logging_steps=1, window_recalibration_steps=1)  # rollouts at every step
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(solution_rows(8)),
                           reward_funcs=[accuracy_reward])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all(h["rollouts/drawn"] > 0 for h in logs)
    # TRL's key names for reward, completion length and token count, beside RASFT's own
    for key in ("reward", "reward_std", "rewards/accuracy_reward/mean", "rewards/accuracy_reward/std",
                "completions/mean_length", "completions/max_length", "completions/clipped_ratio", "num_tokens"):
        assert key in logs[-1], key
    assert logs[-1]["reward"] == 0.0  # a random tiny model never writes the right boxed sum: judged, incorrect
    assert logs[-1]["rollouts/unjudged"] == 0
    assert logs[-1]["completions/mean_length"] <= args.max_new_tokens
    assert logs[-1]["num_tokens"] > logs[0]["num_tokens"] > 0  # a running count, as in TRL
    saved = tmp_path / "saved"
    trainer.save_model(str(saved))
    card = (saved / "README.md").read_text()
    assert "RASFT" in card and "Rollout-Adaptive Supervised Fine-Tuning" in card and "2606.07006" in card
    assert "@article{miao2026rasft" in card


def test_verifier_alias_takes_a_trl_reward_function(tmp_path, tiny_model_dir):
    from trl.rewards import accuracy_reward

    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path, max_steps=1), Dataset.from_dict(solution_rows(8)),
                           verifier=accuracy_reward)
    trainer.train()
    assert trainer.reward_func_names == ["accuracy_reward"]
    assert trainer.state.log_history[0]["rewards/accuracy_reward/mean"] == 0.0


def test_reward_functions_get_what_grpo_passes_and_combine_with_weights(tmp_path, tiny_model_dir):
    seen = {}

    def always(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
        seen.update(columns=set(columns), completion=completions[0], prompt=prompts[0],
                    step=trainer_state.global_step, ids=completion_ids[0])
        log_metric("custom/value", 3.0)
        log_extra("note", ["x"] * len(completions))
        return [1.0] * len(completions)

    def never_judges(prompts, completions, **kwargs):
        return [None] * len(completions)

    # weighted sum over the functions that judged: 0.5 * 1.0 < correct_threshold 1.0 -> never correct
    args = make_args(tmp_path, reward_weights=[0.5, 2.0], log_completions=True, max_steps=1)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), reward_funcs=[always, never_judges])
    trainer.train()
    log = trainer.state.log_history[0]
    assert seen["columns"] == {"answer"}  # dataset columns, without the prompt, the expert completion, internals
    assert isinstance(seen["prompt"], list) and seen["completion"] == [
        {"role": "assistant", "content": seen["completion"][0]["content"]}]
    assert isinstance(seen["ids"], list) and seen["step"] == 0
    assert log["custom/value"] == 3.0
    assert log["reward"] == 0.5 and log["rewards/always/mean"] == 1.0
    assert math.isnan(log["rewards/never_judges/mean"])  # GRPO's nanmean over a function that judged nothing
    assert log["rollouts/accuracy"] == 0.0 and log["rollouts/unjudged"] == 0
    # log_completions: GRPO's table, one parquet file per logging step, with the extra column
    import pandas as pd

    table = pd.read_parquet(tmp_path / "out" / "completions" / "completions_00001.parquet")
    assert len(table) == log["rollouts/drawn"] and set(table["note"]) == {"x"} and set(table["reward"]) == {0.5}


def test_combine_rewards_follows_grpo_nansum():
    nan = float("nan")
    rewards = torch.tensor([[1.0, nan], [nan, nan], [0.0, 1.0]])  # [N=3, F=2]
    combined = combine_rewards(rewards, torch.tensor([0.5, 2.0]))
    assert combined[0] == 0.5 and math.isnan(combined[1]) and combined[2] == 2.0


def test_reward_funcs_mistakes_are_clear(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="not both"):
        resolve_reward_funcs("math", "math")
    with pytest.raises(TypeError, match="verifier"):
        resolve_reward_funcs([torch.nn.Linear(1, 1)], None)
    with pytest.raises(ValueError, match="Unknown verifier"):
        resolve_reward_funcs(["maths"], None)
    funcs, names = resolve_reward_funcs(["math", PatternVerifier([1.0]), PatternVerifier([0.0])], None)
    assert names == ["math", "PatternVerifier_0", "PatternVerifier_1"]
    with pytest.raises(ValueError, match="reward_weights has 1 values for 2"):
        RASFTTrainer(tiny_model_dir, make_args(tmp_path, reward_weights=[1.0]), Dataset.from_dict(math_rows(4)),
                     reward_funcs=[PatternVerifier([1.0]), PatternVerifier([0.0])])
    assert trl_completions(["plain"], ["t"]) == ["t"]


def test_rasft_verifiers_work_in_grpo_trainer(tmp_path, tiny_model_dir):
    from trl import GRPOConfig, GRPOTrainer

    from rasft_trl.verifiers import MathVerifier

    rows = math_rows(4)
    dataset = Dataset.from_dict({"prompt": rows["prompt"], "answer": rows["answer"]})
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=6, use_cpu=True, bf16=False, report_to="none", logging_steps=1,
                      save_strategy="no")
    trainer = GRPOTrainer(tiny_model_dir, reward_funcs=[MathVerifier(num_workers=1)], args=args,
                          train_dataset=dataset)
    trainer.train()
    log = trainer.state.log_history[0]
    assert "rewards/math/mean" in log and log["rewards/math/mean"] == 0.0


def test_grpo_config_fields(tmp_path, tiny_model_dir):
    from rasft_trl.data import INDEX_COLUMN

    # shuffle_dataset=False keeps the dataset order
    args = make_args(tmp_path, shuffle_dataset=False, per_device_train_batch_size=4)
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0]))
    assert [row[INDEX_COLUMN] for row in next(iter(trainer.get_train_dataloader()))] == [0, 1, 2, 3]
    # generation_kwargs override the sampling fields; an unknown field is an error naming it
    args = make_args(tmp_path, max_steps=1, generation_kwargs={"max_new_tokens": 2})
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0]))
    trainer.train()
    assert trainer.state.log_history[0]["completions/max_length"] <= 2
    args = make_args(tmp_path, max_steps=1, generation_kwargs={"not_a_field": 1})
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(8)), verifier=PatternVerifier([1.0]))
    with pytest.raises(ValueError, match="not_a_field"):
        trainer.train()


def test_disable_dropout_zeroes_every_dropout(tmp_path):
    from tiny import build_tiny_model
    from transformers import AutoConfig

    path = build_tiny_model(str(tmp_path / "model"))
    config = AutoConfig.from_pretrained(path)
    config.attention_dropout = 0.5
    config.save_pretrained(path)
    args = make_args(tmp_path, disable_dropout=True, use_ratio=False)
    trainer = RASFTTrainer(path, args, Dataset.from_dict(math_rows(4)), verifier=PatternVerifier([1.0]))
    rates = [m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    rates += [m.attention_dropout for m in trainer.model.modules() if isinstance(getattr(m, "attention_dropout", None),
                                                                                 float)]
    assert rates and all(rate == 0.0 for rate in rates)


def test_chat_template_kwargs_reach_the_template(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from rasft_trl.data import tokenize_prompt

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = "{% if flag %}F{% endif %}" + tokenizer.chat_template
    prompt = [{"role": "user", "content": "hi"}]
    assert tokenize_prompt(tokenizer, prompt, {"flag": True}) != tokenize_prompt(tokenizer, prompt)
    args = make_args(tmp_path, chat_template_kwargs={"flag": True})
    trainer = RASFTTrainer(tiny_model_dir, args, Dataset.from_dict(math_rows(4)), processing_class=tokenizer,
                           verifier=PatternVerifier([1.0]))
    first = trainer.train_dataset[0]["prompt_ids"]
    assert first == tokenize_prompt(tokenizer, math_rows(4)["prompt"][0], {"flag": True})


def test_every_config_field_is_documented_with_its_choices():
    import dataclasses

    from rasft_trl.baselines import SFTVariantConfig
    from rasft_trl.rasft_config import parameter_docs

    for cls in (RASFTConfig, SFTVariantConfig):
        docs = parameter_docs(cls.__doc__)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in cls.__dict__["__annotations__"]:
            assert fields[name].metadata["help"] == docs[name], name
    fields = {f.name: f for f in dataclasses.fields(RASFTConfig)}
    assert fields["token_factor"].metadata["choices"] == ["dft", "sft", "profit"]
    with pytest.raises(SystemExit):
        from trl import TrlParser

        TrlParser((RASFTConfig,)).parse_args_into_dataclasses(["--output_dir", "x", "--token_factor", "dfft"])


def test_end_of_training_summary_line(tmp_path, tiny_model_dir, capsys):
    trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path, max_steps=1), Dataset.from_dict(math_rows(8)),
                           verifier=PatternVerifier([1.0, 0.0]))
    trainer.train()
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("RASFT finished")]
    assert len(line) == 1 and "1 steps" in line[0] and "rollouts" in line[0] and "50% correct" in line[0]
    assert os.path.basename(trainer.args.output_dir) in line[0]


def test_every_logged_key_is_documented(tmp_path, tiny_model_dir):
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    doc = open(os.path.join(root, "docs", "metrics.md")).read()
    documented = set(re.findall(r"`([a-z_/<>.]+)`", doc))
    keys = set()
    runs = [
        (dict(window_recalibration_steps=1, filter_near_duplicate_threshold=0.8, kl_weight=0.1), "math"),
        (dict(token_factor="profit", profit_normalization="kept"), PatternVerifier([1.0])),
    ]
    for i, (overrides, verifier) in enumerate(runs):
        trainer = RASFTTrainer(tiny_model_dir, make_args(tmp_path / str(i), **overrides),
                               Dataset.from_dict(math_rows(8)), eval_dataset=Dataset.from_dict(math_rows(2)),
                               verifier=verifier)
        trainer.train()
        trainer.evaluate()
        for entry in trainer.state.log_history:
            keys.update(entry)
    assert {"reward", "num_tokens", "window/in_frac", "kl/mean", "profit/kept_frac", "eval_loss"} <= keys

    def documented_as(key):
        if key in documented:
            return True
        generic = re.sub(r"^rewards/[^/]+/", "rewards/<name>/", key)
        generic = re.sub(r"^verifier/[a-z_]+$", "verifier/<counter>", generic)
        return generic in documented or generic in doc

    missing = sorted(k for k in keys if not documented_as(k))
    assert not missing, missing
