"""Every recipe parses into its dataclasses and trains one step with the tiny model and built-in data swapped in."""

import glob
import json
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(
    path for path in glob.glob(os.path.join(ROOT, "recipes", "**", "*.yaml"), recursive=True)
    if "accelerate_configs" not in path and f"{os.sep}studies{os.sep}" not in path
)
PAPER_RUNS = [("Qwen2.5-Math-1.5B", "numina"), ("Qwen2.5-Math-7B", "numina"), ("Llama-3.2-3B", "numina"),
              ("Qwen2.5-Coder-3B", "kodcode"), ("Qwen2.5-Coder-7B", "kodcode"), ("Llama-3.2-3B", "kodcode")]


def uses_vllm(path):
    with open(path) as f:
        return bool(yaml.safe_load(f).get("use_vllm"))


def train_one_step(recipe, tmp_path, model_dir, extra=()):
    """Train one step of `recipe` as written, with the tiny model and the built-in arithmetic data swapped in (no
    hub access here). Returns the trainer."""
    swap = [
        "--model_name_or_path", model_dir, "--dtype", "float32", "--attn_implementation", "eager",
        "--dataset_name", "builtin:arithmetic", "--max_train_samples", "4", "--prompt_column", "prompt",
        "--answer_column", "answer", "--verifier", "math",
        "--output_dir", str(tmp_path), "--max_steps", "1", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--bf16", "false", "--gradient_checkpointing", "false",
        "--use_cpu", "true", "--save_strategy", "no", "--logging_steps", "1",
    ]
    if script_name(recipe) == "grpo":  # TRL's GRPOConfig: completions per step must fill whole groups
        swap += ["--max_completion_length", "8", "--num_generations", "2"]
    else:
        swap += ["--completion_column", "completion", "--max_new_tokens", "8", "--max_length", "256",
                 "--calibration_sample_size", "4"]
    swap += list(extra)
    module, (script_args, training_args, model_args) = parse(recipe, swap)
    script_args.system_prompt = script_args.prompt_template = None
    trainer = module.main(script_args, training_args, model_args)
    assert trainer.state.global_step == 1
    assert any("loss" in h for h in trainer.state.log_history)
    return trainer


def script_name(path):
    return re.search(r"-m rasft_trl\.scripts\.(\w+)", launch_line(path)).group(1)


def launch_line(path):
    with open(path) as f:
        return f.readline()


def parse(path, extra=()):
    from rasft_trl.scripts import grpo, rasft, sft, srft

    modules = {"rasft": rasft, "sft": sft, "srft": srft, "grpo": grpo}
    module = modules[re.search(r"-m rasft_trl\.scripts\.(\w+)", launch_line(path)).group(1)]
    return module, module.make_parser().parse_args_and_config(["--config", path, *extra])


def test_there_are_recipes_for_every_paper_model_and_method():
    names = {os.path.relpath(p, os.path.join(ROOT, "recipes")) for p in RECIPES}
    for model in ["Qwen2.5-Math-1.5B", "Qwen2.5-Math-7B", "Llama-3.2-3B"]:
        assert f"{model}/rasft/config_numina.yaml" in names
    for model in ["Qwen2.5-Coder-3B", "Qwen2.5-Coder-7B", "Llama-3.2-3B"]:
        assert f"{model}/rasft/config_kodcode.yaml" in names
    for method in ["sft", "sft_kl", "dft", "asft", "profit"]:
        assert f"Qwen2.5-Math-1.5B/{method}/config_numina.yaml" in names
    # GRPO, the RL baseline, for every paper run; SRFT as in its paper, with its two ablations (Table 3)
    for model, data in PAPER_RUNS:
        assert f"{model}/grpo/config_{data}.yaml" in names
    for variant in ("", "_no_w_sft", "_no_w_rl"):
        assert f"Qwen2.5-Math-7B/srft/config_openr1{variant}.yaml" in names
    # every paper model: vLLM colocated and as a server, LoRA and QLoRA for a single GPU, each with a memory estimate
    for model, data in PAPER_RUNS:
        for variant in ("vllm", "vllm_server", "lora", "qlora"):
            name = f"{model}/rasft/config_{data}_{variant}.yaml"
            assert name in names, name
            header = open(os.path.join(ROOT, "recipes", name)).read().split("\n\n")[0]
            assert "# Memory (estimate, not measured): ~" in header, name
            if variant == "vllm_server":
                assert "trl vllm-serve --model" in header, name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "recipes")))
def test_recipe_parses_and_trains_one_step(recipe, tmp_path, tiny_model_dir, tiny_wide_model_dir):
    line = launch_line(recipe)
    relative = os.path.relpath(recipe, ROOT)
    assert line.startswith("# accelerate launch --config_file recipes/accelerate_configs/")
    assert f"--config {relative}" in line, "the launch command must name this very file"
    accelerate_config = re.search(r"--config_file (\S+)", line).group(1)
    assert os.path.exists(os.path.join(ROOT, accelerate_config))
    # bf16 needs a GPU: parse the recipe as written except for the precision flags
    module, (script_args, training_args, model_args) = parse(recipe, ["--bf16", "false", "--use_cpu", "true"])
    raw = yaml.safe_load(open(recipe))
    for key in ("num_rollouts", "token_factor", "loss_type", "kl_weight", "learning_rate", "max_length"):
        if key in raw:
            assert getattr(training_args, key) == raw[key], key
    assert model_args.model_name_or_path and script_args.dataset_name

    if uses_vllm(recipe):
        pytest.skip("a vLLM recipe: trained for one step by tests/test_vllm.py in the vLLM environment")
    trainer = train_one_step(recipe, tmp_path, tiny_wide_model_dir if raw.get("load_in_4bit") else tiny_model_dir)
    if raw.get("use_peft"):
        assert trainer.use_peft and trainer.ref_model is None  # the reference is the adapter-disabled model
    if raw.get("load_in_4bit"):
        import bitsandbytes

        assert any(isinstance(m, bitsandbytes.nn.Linear4bit) for m in trainer.model.modules())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "recipes")))
def test_recipe_prompts_the_way_the_evaluation_does(recipe):
    """`rasft-trl eval` prompts a benchmark with the system line of its domain (rasft_trl.prompts); a recipe must
    train with the same line, as a system message or at the end of its prompt template."""
    from rasft_trl.prompts import SYSTEM_PROMPTS

    raw = yaml.safe_load(open(recipe))
    if str(raw.get("dataset_name", "")).startswith("builtin:"):
        return  # the smoke recipe's built-in arithmetic is not a paper benchmark domain
    line = SYSTEM_PROMPTS[raw.get("verifier", "math")]
    assert "system_prompt" in raw or "prompt_template" in raw
    if "system_prompt" in raw:
        assert raw["system_prompt"] == line
    if "prompt_template" in raw:
        assert raw["prompt_template"].format(prompt="Q") == f"Q\n{line}"


def test_recipe_script_resumes_from_the_last_checkpoint(tmp_path, tiny_model_dir):
    """`--resume_from_checkpoint true` (or a folder) reaches `Trainer.train`: the second run starts at step 1."""
    from rasft_trl.scripts.rasft import resume_argument

    recipe = os.path.join(ROOT, "recipes", "smoke", "tiny", "config.yaml")
    base = ["--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path), "--save_strategy", "steps",
            "--save_steps", "1", "--use_cpu", "true", "--bf16", "false"]
    module, (script_args, training_args, model_args) = parse(recipe, [*base, "--max_steps", "1"])
    module.main(script_args, training_args, model_args)
    state_file = tmp_path / "checkpoint-1" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["loss"] = 123.0  # a marker: only a resumed run carries it
    state_file.write_text(json.dumps(state))
    _, (script_args, training_args, model_args) = parse(
        recipe, [*base, "--max_steps", "2", "--resume_from_checkpoint", "true"]
    )
    trainer = module.main(script_args, training_args, model_args)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and len(losses) == 2 and losses[0] == 123.0  # step 1 came from checkpoint-1
    assert resume_argument("false") is None and resume_argument("last") is True
    with pytest.raises(ValueError, match="is not a folder"):
        resume_argument(str(tmp_path / "nope"))
