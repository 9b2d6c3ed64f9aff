"""RASFTTrainer: orchestration of Rollout-Adaptive Supervised Fine-Tuning on TRL's base trainer.

One optimizer step: (1) score the expert demonstrations of all micro-batches of the step under the current policy,
(2) route problems through the expert-loss window, (3) draw K rollouts for the selected problems through the
generation backend and verify them, (4) build candidate pools with difficulty-adaptive coefficients,
(5) attach frozen-reference log-probs, (6) split the pools back into micro-batches and count the step's target
tokens across processes so the loss is normalized once for the whole step. The algebra lives in `losses.py`
and `curriculum.py`; this file only moves data between them. Metrics and logging (`trainer_metrics.py`),
checkpoints and resuming (`checkpoints.py`), the model's forward passes (`scoring.py`) and small helpers
(`trainer_utils.py`) live beside it, as mixins and functions that SRFT and the baselines share.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from transformers import AutoTokenizer, PreTrainedModel
from trl.models.utils import prepare_deepspeed, prepare_fsdp
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path

from . import curriculum, losses
from .async_rollouts import AsyncRolloutsMixin, step_experts
from .checkpoints import (  # noqa: F401  (re-exported: `rasft_trl.rasft_trainer` still names them)
    STATE_FILE,
    CheckpointMixin,
    checkpoint_problem,
    last_complete_checkpoint,
    resolve_resume_checkpoint,
)
from .data import (
    INDEX_COLUMN,
    Trajectory,
    assemble_pools,
    collate_trajectories,
    scatter_rows,
    tokenize_dataset,
    truncate_completion,
)
from .distributed import broadcast_from_main, enable_cpu_fsdp
from .filters import filter_rollouts
from .generation import make_generation_backend
from .generation.base import GenerationBackend
from .model_card import CardSourcesMixin
from .notices import release_4bit_notice
from .rasft_config import RASFTConfig
from .rewards import (
    combine_rewards,
    disable_dropout,
    resolve_awaitable,
    resolve_reward_funcs,
    reward_column,
    reward_inputs,
    trl_completions,
)
from .scoring import ScoringMixin
from .trainer_metrics import TrainerMetricsMixin
from .trainer_utils import (  # noqa: F401  (re-exported: `rasft_trl.rasft_trainer` still names them)
    TIMED_OUT,
    _frozen_reference,
    _identity_collator,
    _init_kwargs,
    call_with_timeout,
    check_args_position,
)


with warnings.catch_warnings():  # TRL warns on every import from `trl.experimental`
    warnings.simplefilter("ignore")
    from trl.experimental.utils import prepare_peft_model


logger = logging.getLogger(__name__)


class RASFTTrainer(ScoringMixin, TrainerMetricsMixin, AsyncRolloutsMixin, CheckpointMixin, CardSourcesMixin,
                   _BaseTrainer):
    """Trainer for Rollout-Adaptive Supervised Fine-Tuning (RASFT).

    Args:
        model: a model id / local path (loaded with `args.model_init_kwargs`) or a loaded causal LM.
        args: the [`RASFTConfig`].
        train_dataset: one row per problem with the prompt, the expert completion and the verifier's columns.
        eval_dataset: optional; evaluated with the expert NLL (`eval_loss`).
        processing_class: tokenizer; loaded from the model's path when omitted.
        verifier: alias of `reward_funcs` (pass one of the two).
        peft_config: a `peft.PeftConfig` for LoRA / QLoRA; the reference is then the same model with the adapter
            disabled (no second copy of the weights).
        generation_backend: a [`GenerationBackend`]; default: batched `generate` on the training model.
        callbacks, optimizers: as in [`~transformers.Trainer`].
        reward_funcs: what decides whether a rollout is correct, as `GRPOTrainer` takes it: a registered verifier
            name (`"math"`, `"code"`), any callable in TRL's reward-function form
            `(prompts, completions, completion_ids, **kwargs) -> list[float | None]` (TRL's
            `trl.rewards.accuracy_reward` works unchanged), or a list of them weighted by `args.reward_weights`
            (see `rasft_trl.rewards`). Default with rollouts: `"math"`.
    """

    _tag_names = ["trl", "rasft"]
    _name = "RASFT"
    _paper = {
        "title": "RASFT: Rollout-Adaptive Supervised Fine-Tuning for Reasoning",
        "id": "2606.07006",
        "citation": (
            "@article{miao2026rasft,\n"
            "    title        = {{RASFT: Rollout-Adaptive Supervised Fine-Tuning for Reasoning}},\n"
            "    author       = {Yongliang Miao and Fengyuan Liu and Wei Shi and Yanguang Liu and Fei Sun and Na Zou "
            "and Mengnan Du},\n"
            "    year         = 2026,\n"
            "    journal      = {arXiv preprint arXiv:2606.07006}\n"
            "}"
        ),
    }
    # The loss is divided by the token count of the whole optimizer step: transformers must not rescale it.
    loss_is_scaled_for_ga = True
    # Whether the method routes problems through the expert-loss window (whose calibration a checkpoint carries).
    _uses_window = True
    # Per-token fields the fused LM head computes inside the forward (TRL's `add_fused_lm_head(outputs=...)`).
    _fused_outputs: tuple[str, ...] = ("log_probs",)

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: RASFTConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        verifier: str | Callable | None = None,
        peft_config=None,
        generation_backend: GenerationBackend | None = None,
        callbacks=None,
        optimizers=(None, None),
        reward_funcs=None,
    ):
        check_args_position(args, RASFTConfig)
        model_id = model if isinstance(model, str) else model.config._name_or_path
        if args is None:
            args = RASFTConfig(f"{str(model_id).split('/')[-1]}-RASFT")
        if train_dataset is None:
            raise ValueError("RASFTTrainer needs a `train_dataset` (columns: prompt, completion, and the verifier's).")
        if isinstance(model, str):
            model = create_model_from_path(model, **_init_kwargs(args))
        elif args.model_init_kwargs:
            logger.warning("`model_init_kwargs` is ignored: the model is already loaded.")
        if getattr(model, "is_loaded_in_4bit", False):
            release_4bit_notice()  # bitsandbytes' note on its optional 4-bit CPU kernel concerns this run
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model_id, trust_remote_code=args.trust_remote_code)
        if processing_class.pad_token_id is None:
            processing_class.pad_token = processing_class.eos_token

        if args.use_vllm and args.use_rollouts:
            from trl.import_utils import is_vllm_available

            if not is_vllm_available():
                raise ImportError("use_vllm=True needs vLLM: `pip install 'rasft-trl[vllm]'` (or set use_vllm=False "
                                  "to sample rollouts with transformers' generate).")
        if reward_funcs is None and verifier is None and args.use_rollouts:
            verifier = "math"
        self.reward_funcs, self.reward_func_names = resolve_reward_funcs(reward_funcs, verifier)
        weights = args.reward_weights
        if weights is not None and len(weights) != len(self.reward_funcs):
            raise ValueError(f"reward_weights has {len(weights)} values for {len(self.reward_funcs)} reward "
                             f"functions {self.reward_func_names}.")
        self.reward_weights = torch.tensor(weights if weights is not None else [1.0] * len(self.reward_funcs))
        # the single reward function / verifier (None with several: see `reward_funcs`)
        self.verifier = self.reward_funcs[0] if len(self.reward_funcs) == 1 else None
        self.use_peft = peft_config is not None or is_peft_model(model)
        ref_model = None
        if args.needs_reference and not self.use_peft:
            ref_model = _frozen_reference(model, model_id, args)
            add_fused_lm_head(ref_model, temperature=1.0)
        if args.disable_dropout:
            disable_dropout(model)
            if ref_model is not None:
                disable_dropout(ref_model)
        # Per-token log-probs at temperature 1 without materializing [B, T, V] logits. On the causal LM itself: a
        # model the user already wrapped with PEFT gets the head inside the wrapper, where PEFT's forward reaches it.
        add_fused_lm_head(model.get_base_model() if is_peft_model(model) else model, temperature=1.0,
                          outputs=self._fused_outputs)
        if self.use_peft:
            if is_peft_model(model) and peft_config is None:
                logger.warning("The model already carries an adapter: the reference is the base model without it.")
            model = prepare_peft_model(model, peft_config, args)

        self.eos_token_id = processing_class.eos_token_id
        self._counters: dict[str, float] = defaultdict(float)
        train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = self._prepare_eval_datasets(eval_dataset, processing_class, args)

        eval_sets = list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
        if any(isinstance(d, IterableDataset) for d in [train_dataset, *eval_sets]):
            # accelerate would read a streamed set on the main process and broadcast its batches, which must then be
            # tensors; RASFT's batches are rows (token lists, the verifier's columns): each process reads its shard
            args.accelerator_config.dispatch_batches = False
        enable_cpu_fsdp()  # an FSDP launch on CPU processes runs FSDP2 over gloo (see `rasft_trl.distributed`)
        super().__init__(
            model=model,
            args=args,
            data_collator=_identity_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.ref_model = self._prepare_reference(ref_model)
        self._generation_backend = generation_backend
        self._calibration: curriculum.WindowCalibration | None = None
        self._calibrated_at = 0  # optimizer step of the last calibration
        self._expert_ref_cache: dict[int, torch.Tensor] = {}
        self._synced_step = 0
        self._rng_checkpoint: str | None = None  # mid-epoch resume: RNG state to restore before the first rollouts
        self._nonfinite_loss: torch.Tensor | None = None  # set when a micro-batch loss of the step is not finite
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._totals: dict[str, float] = defaultdict(float)  # run totals for the end-of-training summary
        self._num_tokens: float | None = None  # tokens trained on so far, all processes (TRL's `num_tokens`)
        self._completion_log: list[tuple] = []  # (prompt, completion, rewards per function, reward)
        self._completion_extra: dict[str, list] = defaultdict(list)
        self._last_log_time = time.perf_counter()

    # ------------------------------------------------------------------ setup

    def _prepare_eval_datasets(self, eval_dataset, tokenizer, args: RASFTConfig):
        """An evaluation set, or a dict / `DatasetDict` of named ones (each logged as `eval_<name>_loss`, as in
        transformers), tokenized like the training set; sets that are already tokenized are kept."""
        if isinstance(eval_dataset, dict):
            return {name: self._prepare_one_eval(dataset, tokenizer, args, f"eval_{name}")
                    for name, dataset in eval_dataset.items()}
        return self._prepare_one_eval(eval_dataset, tokenizer, args, "eval")

    def _prepare_one_eval(self, dataset, tokenizer, args: RASFTConfig, split: str):
        if INDEX_COLUMN in (getattr(dataset, "column_names", None) or []):
            return dataset  # prepared already (a set passed at construction, then to `evaluate` by the user)
        return self._prepare_dataset(dataset, tokenizer, args, split)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """As `Trainer.evaluate` (the expert NLL of the demonstrations, `eval_loss`); a dataset or a dict of named
        datasets passed here is validated and tokenized like the training set first."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._prepare_eval_datasets(eval_dataset, self.processing_class, self.args)
        return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                metric_key_prefix=metric_key_prefix)

    def _prepare_dataset(self, dataset: Dataset, tokenizer, args: RASFTConfig, split: str) -> Dataset:
        """Validate and tokenize a set against the columns the reward functions read (`data.tokenize_dataset`)."""
        references = [getattr(f, "reference_column", None) for f in self.reward_funcs]
        references = list(dict.fromkeys(r for r in references if r))
        return tokenize_dataset(dataset, tokenizer, args, split, references, self.eos_token_id, self._counters)

    def _prepare_reference(self, ref_model):
        if ref_model is None:
            return None
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(ref_model, self.accelerator)
        if self.is_fsdp_enabled:
            if self.accelerator.state.fsdp_plugin.cpu_ram_efficient_loading:
                # only the main process loaded real weights (the others hold uninitialized memory, and so did the
                # copy made from them): give every process the main process's reference before sharding it
                broadcast_from_main(ref_model, self.accelerator.device)
            return prepare_fsdp(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    @property
    def generation_backend(self) -> GenerationBackend:
        if self._generation_backend is None:
            self._generation_backend = make_generation_backend(self)
            self._synced_step = self.state.global_step  # a new engine starts from the current weights
        return self._generation_backend

    # ------------------------------------------------------------------ one optimizer step
    # (`get_batch_samples`, drawing rollouts now or one step ahead: `async_rollouts.AsyncRolloutsMixin`)

    def _build_step(self, raw_batches: list[list[dict]]) -> tuple[list[dict], torch.Tensor]:
        args = self.args
        rows = [row for batch in raw_batches for row in batch]
        micro_of = [i for i, batch in enumerate(raw_batches) for _ in batch]
        experts = step_experts(rows, args.max_length)
        correct, solv, wrong = {}, {}, {}
        if args.use_rollouts:
            selected = self._routed(experts)  # routed now, or one step ahead with the prefetch
            correct, solv, wrong = self._rollouts(rows, experts, selected)
        pools = assemble_pools(experts, correct, solv, wrong)
        flat = [t for pool in pools for t in pool]
        coefficients = self._coefficients(flat)  # [N]
        micro = [[] for _ in raw_batches]
        micro_coef = [[] for _ in raw_batches]
        offset = 0
        for pool, m in zip(pools, micro_of):
            micro[m].extend(pool)
            micro_coef[m].append(coefficients[offset : offset + len(pool)])
            offset += len(pool)
        batches = [self._finalize_micro_batch(t, torch.cat(c)) for t, c in zip(micro, micro_coef)]
        self._log_pool_metrics(pools, coefficients, torch.tensor([t.is_expert for t in flat]))
        if args.token_factor == "profit" and args.profit_normalization == "kept":
            self._select_profit_tokens(batches)
        if args.loss_aggregation == "token_mean":
            local_items = sum(int(b.get("token_mask", b["completion_mask"]).sum()) for b in batches)
        else:
            local_items = len(rows)
        num_items = self.accelerator.gather(torch.tensor(local_items, device=self.accelerator.device)).sum()
        return batches, num_items

    def _select_profit_tokens(self, batches: list[dict]) -> None:
        """ProFiT baseline: train with SFT on the tokens whose current probability passes the threshold, normalized
        by their count; an optimizer step in which no token passes (on any process) falls back to plain SFT."""
        kept_total = 0
        for batch in batches:
            logps = self._token_logps_no_grad(self.model, batch)
            batch["token_mask"] = losses.kept_token_mask(logps, batch["completion_mask"], self.args.profit_threshold)
            batch["token_mask"] = batch["token_mask"].cpu()
            kept_total += int(batch["token_mask"].sum())
        kept_total, all_total = self._global_sum([kept_total, sum(int(b["completion_mask"].sum()) for b in batches)])
        fallback = kept_total == 0
        if fallback:
            for batch in batches:
                batch["token_mask"] = batch["completion_mask"].clone()
        self._counters["profit/fallback_steps"] += int(fallback)
        self._metrics["profit/kept_frac"].append(kept_total / max(all_total, 1))

    def _coefficients(self, flat: list[Trajectory]) -> torch.Tensor:
        """Trajectory coefficients of all pools of the step (section 3). -> [N]"""
        args = self.args
        group_ids = torch.tensor([t.group_id for t in flat])
        is_expert = torch.tensor([t.is_expert for t in flat])
        solvability = torch.tensor([t.solvability for t in flat])
        if args.pool_weighting == "group_advantage":
            return losses.group_advantage_coefficients(
                group_ids, is_expert, solvability, torch.tensor([t.num_incorrect for t in flat]), args.w_min,
                args.w_max, args.group_adv_tanh_scale, args.group_adv_max_incorrect,
                (args.group_adv_rollout_clip_low, args.group_adv_rollout_clip_high), args.group_adv_rollout_scale,
            )
        return losses.pool_coefficients(
            group_ids, is_expert, solvability, args.w_min, args.w_max, args.w_rollout, adaptive=args.adaptive_weights
        )  # each pool sums to 1

    def _route(self, experts: list[Trajectory], step: int | None = None) -> torch.Tensor:
        """Expert-loss window: which problems of optimizer step `step` (default: this one) get rollouts ([P] bool)."""
        args = self.args
        step = self.state.global_step if step is None else step
        every = args.window_recalibration_steps
        if self._calibration is None or (every and step - self._calibrated_at >= every):
            self._calibration = self._calibrate()
            self._calibrated_at = step
            self._counters["window/calibrations"] += 1
        nlls = self._last_routing_nlls = self._expert_nlls(experts)  # [P] (kept for window/routing_nll_drift)
        progress = step / max(self.state.max_steps, 1)
        low, high = curriculum.window_bounds(self._calibration, progress)
        regions = curriculum.window_regions(nlls, low, high)
        generator = torch.Generator().manual_seed(
            args.seed * 1_000_003 + step * 7919 + self.accelerator.process_index
        )
        uniform = torch.rand(len(experts), generator=generator)
        selected = curriculum.select_for_rollouts(
            nlls, regions, uniform, args.rollout_fraction, args.hard_probe_ratio, self._calibration.probe_ceiling
        )
        counts = self._global_sum([(regions == code).sum() for code in curriculum.REGION_NAMES] + [len(experts)])
        for code, name in curriculum.REGION_NAMES.items():
            self._metrics[f"window/{name}_frac"].append(counts[code] / max(counts[-1], 1))
        self._metrics["window/low"].append(low)
        self._metrics["window/high"].append(high)
        self._metrics["window/expert_nll"].append(float(nlls.mean()))
        return selected

    def _calibrate(self) -> curriculum.WindowCalibration:
        """Quantiles of the expert NLL on a sample of the training set, gathered from all processes."""
        args = self.args
        dataset = self.train_dataset
        if isinstance(dataset, IterableDataset):  # streamed: the first rows (shuffle the stream to sample it)
            rows = list(dataset.take(args.calibration_sample_size))
            size = len(rows)
            mine = rows[self.accelerator.process_index :: self.accelerator.num_processes]
            sample = {key: [row[key] for row in mine] for key in ("prompt_ids", "completion_ids")}
        else:
            size = min(args.calibration_sample_size, len(dataset))
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:size]
            sample = dataset.select(order[self.accelerator.process_index :: self.accelerator.num_processes].tolist())
        experts = [
            Trajectory(p, truncate_completion(p, c, args.max_length), i, True)
            for i, (p, c) in enumerate(zip(sample["prompt_ids"], sample["completion_ids"]))
        ]
        nlls = self._expert_nlls(experts, desc="Calibrating the expert-loss window")  # [len(shard)]
        # Shards differ by one problem when the sample does not split evenly; a gather needs equal shapes.
        per_rank = -(-size // self.accelerator.num_processes)
        padded = torch.zeros(per_rank, 2, dtype=torch.float32)  # [per_rank, (nll, is_real)]
        padded[: len(nlls), 0] = nlls.float()
        padded[: len(nlls), 1] = 1.0
        gathered = self.accelerator.gather(padded.to(self.accelerator.device)).cpu()  # [world * per_rank, 2]
        all_nlls = gathered[gathered[:, 1] > 0, 0]
        calibration = curriculum.calibrate_window(
            all_nlls,
            tuple(args.window_start_quantiles),
            tuple(args.window_end_quantiles),
            args.hard_probe_max_quantile,
        )
        logger.info(f"Expert-loss window calibrated on {calibration.num_samples} problems: {calibration.to_dict()}")
        return calibration

    def _expert_nlls(self, experts: list[Trajectory], desc: str | None = None) -> torch.Tensor:
        """Difficulty `L(x)` of each expert demonstration under the current policy (no grad). -> [P] (cpu)."""
        out = []
        for logps, batch in self._score(self.model, experts, desc=desc):
            out.append(losses.sequence_nll(logps, batch["completion_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def _rollouts(
        self, rows: list[dict], experts: list[Trajectory], selected: torch.Tensor
    ) -> tuple[dict[int, list[list[int]]], dict[int, float], dict[int, int]]:
        """Draw K rollouts per selected problem, filter and verify them, keep the correct ones (never the incorrect).

        Returns group id -> correct completions, -> solvability, -> number of verified-incorrect rollouts."""
        args, K = self.args, self.args.num_rollouts
        chosen = selected.nonzero().flatten().tolist()
        completions, rewards, truncated, passed = self._sample_and_verify(rows, experts, chosen, K)
        verified = [r is not None and r >= args.correct_threshold for r in rewards]
        usable = [ok and not (args.mask_truncated_completions and cut) for ok, cut in zip(verified, truncated)]
        is_correct = torch.tensor(usable, dtype=torch.bool)
        is_correct = is_correct.view(len(chosen), K) if chosen else torch.zeros(0, K, dtype=torch.bool)
        s = losses.solvability(is_correct)  # [n_selected]
        correct, solvabilities, wrong, too_long = {}, {}, {}, 0
        for j, g in enumerate(chosen):
            solvabilities[g] = float(s[j])
            wrong[g] = sum(rewards[j * K + k] is not None and not is_correct[j, k] for k in range(K))
            kept = []
            for k in range(K):
                ids = completions[j * K + k]
                if not is_correct[j, k]:
                    continue
                if len(experts[g].prompt_ids) + len(ids) > args.max_length:
                    too_long += 1  # a correct rollout that does not fit is not trained on, but counted
                    continue
                kept.append(ids)
            correct[g] = kept
        unjudged = sum(ok and reward is None for ok, reward in zip(passed, rewards))
        stats = self._global_sum([len(chosen), len(completions), int(is_correct.sum()), unjudged, too_long,
                                  float(s.sum()), sum(truncated), sum(v and c for v, c in zip(verified, truncated))])
        self._metrics["rollouts/problems"].append(stats[0])
        self._metrics["rollouts/drawn"].append(stats[1])
        self._metrics["rollouts/truncated"].append(stats[6])
        self._metrics["rollouts/truncated_correct"].append(stats[7])
        if stats[1]:
            self._metrics["rollouts/accuracy"].append(stats[2] / stats[1])
            self._metrics["pool/mean_solvability"].append(stats[5] / stats[0])
        self._counters["rollouts/unjudged"] += stats[3]
        self._counters["rollouts/correct_too_long"] += stats[4]
        for key, value in (("problems", stats[0]), ("drawn", stats[1]), ("correct", stats[2])):
            self._totals[key] += value
        return correct, solvabilities, wrong

    def _sample_and_verify(
        self, rows: list[dict], experts: list[Trajectory], chosen: list[int], K: int
    ) -> tuple[list[list[int]], list[float | None], list[bool], list[bool]]:
        """Sample `K` rollouts for each problem in `chosen` (in lockstep over processes), filter and verify them.

        Shared by RASFT and SRFT. Rollout `j * K + k` belongs to `chosen[j]`. Returns the completions, their
        combined rewards (None: filtered out or not judged), whether each is truncated (no EOS: hit
        `max_new_tokens`), and whether each passed the filters. Logs GRPO's rollout metrics."""
        completions = self._draw_rollouts([experts[i].prompt_ids for i in chosen], K)  # now, or prefetched
        # (`batch_decode([])` returns `[""]`, not `[]`)
        texts = self.processing_class.batch_decode(completions, skip_special_tokens=True) if completions else []
        dropped = self._filter(texts, completions, K)
        keep = [i for i, reason in enumerate(dropped) if reason is None]
        rewards: list[float | None] = [None] * len(completions)
        per_func = torch.full((0, len(self.reward_funcs)), float("nan"))  # [kept, F]
        if keep:
            combined, per_func = self._verify([rows[chosen[i // K]] for i in keep], [texts[i] for i in keep],
                                              [completions[i] for i in keep])
            for i, reward in zip(keep, combined):
                rewards[i] = reward
        truncated = [not ids or ids[-1] != self.eos_token_id for ids in completions]
        self._log_trl_rollout_metrics(per_func, [rewards[i] for i in keep], completions, truncated)
        return completions, rewards, truncated, [reason is None for reason in dropped]

    def _filter(self, texts: list[str], completions: list[list[int]], K: int) -> list[str | None]:
        """Optional reference-implementation filters, per problem; counts every drop as `filters/<reason>`."""
        args = self.args
        reasons: list[str | None] = []
        for start in range(0, len(texts), K):
            reasons += filter_rollouts(
                texts[start : start + K],
                [len(ids) for ids in completions[start : start + K]],
                args.filter_near_duplicate_threshold,
                args.filter_loop_ngram_size,
                args.filter_loop_repeat_fraction,
                args.filter_min_rollout_tokens,
                args.filter_shortcut_min_chars,
            )
        names = ("near_duplicate", "loop", "too_short", "shortcut")
        counts = self._global_sum([reasons.count(name) for name in names])
        for name, count in zip(names, counts):
            self._counters[f"filters/{name}"] += count
        return reasons

    def _verify(self, rows: list[dict], texts: list[str], completions: list[list[int]]
                ) -> tuple[list[float | None], torch.Tensor]:
        """Each rollout's combined reward (None: unjudged) and the rewards per function ([N, F], NaN: not judged),
        every reward function called as GRPO calls it, on its own copies of the arguments, and its rewards checked
        (see `rasft_trl.rewards`)."""
        if not completions:
            return []
        internal = ("prompt_ids", "completion_ids", INDEX_COLUMN, self.args.completion_column)
        columns = {k: [row[k] for row in rows] for k in rows[0] if k not in internal}
        prompts = columns.pop(self.args.prompt_column)
        trl_texts = trl_completions(prompts, texts)
        hooks = {"trainer_state": self.state, "log_extra": self._log_completion_extra, "log_metric": self._log_metric}
        rewards = torch.full((len(completions), len(self.reward_funcs)), float("nan"))  # [N, F]
        for j, (func, name) in enumerate(zip(self.reward_funcs, self.reward_func_names)):
            given = reward_inputs(prompts, trl_texts, completions, columns)  # its own copies: edits change nothing
            values = call_with_timeout(  # an `async def` reward function is awaited, as GRPOTrainer does
                lambda func=func, given=given: resolve_awaitable(func(**given, **hooks)),
                self.args.verifier_timeout,
            )
            if values is TIMED_OUT:  # it did not answer in time: its rewards are missing for this call
                self._counters["verifier/call_timeouts"] += 1
                logger.warning(f"The reward function {name!r} did not return within verifier_timeout="
                               f"{self.args.verifier_timeout} s; it judges none of these {len(completions)} rollouts.")
                continue
            rewards[:, j] = torch.tensor(reward_column(name, values, len(completions)))
        combined = combine_rewards(rewards, self.reward_weights)  # [N]
        if bool(torch.isnan(combined).all()):
            logger.warning(f"Every reward function returned None for all {len(completions)} rollouts of this call "
                           f"({self.reward_func_names}): none is judged (rollouts/unjudged). Check that the dataset "
                           f"has the columns they read ({sorted(columns)} were passed).")
        if self.args.log_completions:
            self._completion_log.extend(zip(prompts, trl_texts, rewards.tolist(), combined.tolist()))
        return [None if math.isnan(r) else r for r in combined.tolist()], rewards

    def _finalize_micro_batch(self, trajectories: list[Trajectory], coef: torch.Tensor) -> dict[str, torch.Tensor]:
        """Collate a micro-batch and attach its pool coefficients and reference log-probs."""
        args = self.args
        batch = collate_trajectories(trajectories, self.processing_class.pad_token_id)
        if args.loss_aggregation == "sequence_mean":
            coef = losses.sequence_mean_coefficients(coef, batch["completion_mask"])
        batch["seq_coef"] = coef
        batch["is_expert"] = torch.tensor([t.is_expert for t in trajectories])
        self._attach_routing_nlls(batch, trajectories)  # the NLLs the step was routed with (drift metric)
        if args.use_ratio:
            batch["ref_logps"] = scatter_rows(self._reference_logps(trajectories), batch["completion_mask"])
        return batch

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        if args.kl_weight > 0:
            logps, hidden = self._logps_and_hidden(model, inputs)  # [B, T-1], [B, T, H]
        else:
            logps = self._token_logps(model, inputs)  # [B, T-1]
        # ProFiT ("kept" normalization) trains with SFT on the selected tokens only
        mask = inputs.get("token_mask", inputs["completion_mask"])
        factor = "sft" if "token_mask" in inputs else args.token_factor
        ref = inputs.get("ref_logps") if args.use_ratio else None
        self._log_routing_nll_drift(logps, inputs)  # window/routing_nll_drift (async_rollouts.py)
        loss = losses.rasft_loss(
            logps,
            ref,
            mask,
            inputs["seq_coef"],
            ratio_clip=args.ratio_clip,
            token_factor=factor,
            profit_threshold=args.profit_threshold,
            num_items_in_batch=num_items_in_batch,
            log_ratio_clamp=args.log_ratio_clamp,
        )
        if args.kl_weight > 0:
            kl = self._reverse_kl(model, inputs, hidden)  # [B, T-1]
            loss = loss + losses.kl_penalty(kl, mask, args.kl_weight, num_items_in_batch)
            self._metrics["kl/mean"].append(float(losses.masked_mean(kl.detach(), mask).mean()))
        if ref is not None:
            rho = losses.inverse_sequence_ratio(logps, ref, mask, clip=None, log_ratio_clamp=args.log_ratio_clamp)
            low, high = losses.ratio_clip_fractions(rho, args.ratio_clip)
            self._metrics["ratio/mean"].append(float(rho.clamp(*args.ratio_clip).mean()))
            self._metrics["ratio/clip_low_frac"].append(float(low))
            self._metrics["ratio/clip_high_frac"].append(float(high))
        loss = self._finish_loss(loss, num_items_in_batch)
        return (loss, None) if return_outputs else loss

    def _finish_loss(self, loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """Scale a micro-batch loss normalized by step-wide (all-process) counts for DDP's gradient averaging, and
        note a non-finite value for `_get_grad_norm` (no host sync here)."""
        if num_items_in_batch is not None:
            # `num_items_in_batch` counts all processes while DDP averages gradients over them.
            loss = loss * self.accelerator.num_processes
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite_loss = bad if self._nonfinite_loss is None else self._nonfinite_loss | bad
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        """The step's gradient norm, checked before the optimizer step (see `on_nonfinite`)."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        bad_loss = bool(self._nonfinite_loss) if self._nonfinite_loss is not None else False
        self._nonfinite_loss = None
        norm = float(grad_norm) if grad_norm is not None else 0.0
        if math.isfinite(norm) and not bad_loss:
            return grad_norm
        step = self.state.global_step + 1
        what = "loss" if bad_loss else f"gradient norm ({norm})"
        if self.args.on_nonfinite == "error":
            raise FloatingPointError(
                f"Non-finite {what} at optimizer step {step}; training stopped before the update, so the weights "
                "are still finite. Lower learning_rate, check the verifier's rewards and the config's weights, or "
                "set on_nonfinite='skip' to drop such steps and go on."
            )
        model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient: no update
        self._counters["train/nonfinite_skipped"] += 1
        logger.warning(f"Non-finite {what} at optimizer step {step}: update skipped (on_nonfinite='skip').")
        return 0.0

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation loss: the token-mean NLL of the expert demonstrations."""
        trajectories = [
            Trajectory(r["prompt_ids"], truncate_completion(r["prompt_ids"], r["completion_ids"], self.args.max_length),
                       g, True) for g, r in enumerate(inputs)
        ]
        batch = self._prepare_input(collate_trajectories(trajectories, self.processing_class.pad_token_id))
        with torch.no_grad():
            logps = self._token_logps(model, batch)
            loss = -losses.masked_sum(logps, batch["completion_mask"]).sum() / batch["completion_mask"].sum()
        return loss.detach(), None, None

    # ------------------------------------------------------------------ training and saving
    # (metrics and logging: `trainer_metrics.TrainerMetricsMixin`; checkpoints: `checkpoints.CheckpointMixin`)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None,
              **kwargs):
        """As `Trainer.train`; `resume_from_checkpoint=True` takes the last *complete* checkpoint in `output_dir`
        (a process killed while saving leaves a folder without `trainer_state.json`, which is skipped with a
        warning), and a checkpoint folder that is incomplete is an error naming what is missing."""
        needs_state = self.args.use_rollouts and self._uses_window
        resume_from_checkpoint = resolve_resume_checkpoint(resume_from_checkpoint, self.args.output_dir, needs_state)
        with logprob_tiles(*self.args.logprob_tiles_on(self.accelerator.device.type)):  # CPU-sized on the CPU
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                   ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)
        if self.is_world_process_zero():
            print(self.summary(output))
        return output

    def _get_train_sampler(self, train_dataset=None):
        if not self.args.shuffle_dataset:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return torch.utils.data.SequentialSampler(dataset)
        return super()._get_train_sampler(train_dataset)


@contextmanager
def logprob_tiles(tokens: int | None, vocab: int | None) -> Iterator[None]:
    """Tile sizes of TRL's fused log-prob kernel while training (`None` keeps TRL's; `train()` passes
    `RASFTConfig.logprob_tiles_on(device)`, CPU-sized on the CPU). TRL reads them as module globals at call time, in
    the forward and in the backward, so they are set for the whole `train()` call."""
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    saved = (kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    if tokens is not None:
        kernel.TOKEN_CHUNK_SIZE = tokens
    if vocab is not None:
        trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = vocab
    try:
        yield
    finally:
        kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = saved
