"""RASFTTrainer: orchestration of Rollout-Adaptive Supervised Fine-Tuning on TRL's base trainer.

One optimizer step: (1) score the expert demonstrations of all micro-batches of the step under the current policy,
(2) route problems through the expert-loss window, (3) draw K rollouts for the selected problems through the
generation backend and verify them, (4) build candidate pools with difficulty-adaptive coefficients,
(5) attach frozen-reference log-probs, (6) split the pools back into micro-batches and count the step's target
tokens across processes so the loss is normalized once for the whole step. The algebra lives in `losses.py`
and `curriculum.py`; this file only moves data between them.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from transformers import AutoTokenizer, PreTrainedModel
from trl.models.utils import prepare_deepspeed, prepare_fsdp
from trl.trainer.base_trainer import _BaseTrainer
from trl.trainer.utils import add_fused_lm_head, create_model_from_path, use_adapter

from . import curriculum, losses
from .data import (
    INDEX_COLUMN,
    Trajectory,
    assemble_pools,
    check_prompt_lengths,
    collate_trajectories,
    gather_rows,
    scatter_rows,
    tokenize_completion,
    tokenize_prompt,
    truncate_completion,
    validate_columns,
    validate_row,
    validate_rows,
)
from .distributed import broadcast_from_main, enable_cpu_fsdp, gathered_parameters, sharding_engine
from .filters import filter_rollouts
from .generation import make_generation_backend
from .generation.base import GenerationBackend, global_max
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


with warnings.catch_warnings():  # TRL warns on every import from `trl.experimental`
    warnings.simplefilter("ignore")
    from trl.experimental.utils import prepare_peft_model


logger = logging.getLogger(__name__)
STATE_FILE = "rasft_state.json"


class RASFTTrainer(CardSourcesMixin, _BaseTrainer):
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
        references = [getattr(f, "reference_column", None) for f in self.reward_funcs]
        references = list(dict.fromkeys(r for r in references if r))
        which = "training" if split == "train" else f"evaluation ({split})"
        if not hasattr(dataset, "column_names") or not hasattr(dataset, "map"):
            raise TypeError(f"The {which} dataset must be a `datasets.Dataset` (or, for evaluation, a dict of them), "
                            f"got {type(dataset).__name__}.")
        streaming = isinstance(dataset, IterableDataset)
        columns = dataset.column_names
        if columns is None:  # a streamed dataset whose features are unknown: the first row's columns
            columns = list(next(iter(dataset)).keys())
        validate_columns(columns, [args.prompt_column, args.completion_column] + references, which)
        strings = [r for r in references if r == "answer"]
        if not streaming:
            validate_rows(dataset, args.prompt_column, args.completion_column, strings)
        counter = f"data/{split}_expert_truncated"

        def tokenize(row, index):
            if streaming:  # checked as the rows are read; a whole dataset is checked up front
                validate_row(row, index, args.prompt_column, args.completion_column, strings)
            prompt_ids = tokenize_prompt(tokenizer, row[args.prompt_column], args.chat_template_kwargs)
            completion_ids = tokenize_completion(tokenizer, row[args.completion_column], self.eos_token_id)
            if streaming:
                check_prompt_lengths([len(prompt_ids)], args.max_length, args.prompt_column, first_row=index)
                self._counters[counter] += len(prompt_ids) + len(completion_ids) > args.max_length
            return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, INDEX_COLUMN: index}

        if streaming:  # tokenized lazily, as the trainer reads it; the truncation count grows as it goes
            self._counters[counter] = 0
            return dataset.map(tokenize, with_indices=True)
        dataset = dataset.map(tokenize, with_indices=True, desc=f"Tokenizing {split} dataset")
        check_prompt_lengths([len(ids) for ids in dataset["prompt_ids"]], args.max_length, args.prompt_column)
        overlong = sum(p + c > args.max_length for p, c in zip(
            map(len, dataset["prompt_ids"]), map(len, dataset["completion_ids"])))
        if overlong:
            logger.warning(f"{overlong} {split} demonstrations exceed max_length={args.max_length} and are truncated.")
        self._counters[counter] = overlong
        return dataset

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
        return self._generation_backend

    # ------------------------------------------------------------------ one optimizer step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the raw micro-batches of one optimizer step and turn them into RASFT batches (see module doc)."""
        raw = []
        for _ in range(num_batches):
            try:
                raw.append(next(epoch_iterator))
            except StopIteration:
                break
        if not raw:
            return [], None
        if self._rng_checkpoint is not None:
            # Mid-epoch resume: transformers restores the checkpoint's RNG state only *after* this call (the skipped
            # batches must not consume it), but RASFT draws this step's rollouts here. Restore it now, before any
            # sampling, and turn transformers' later restore into a no-op (see `_load_rng_state`).
            super()._load_rng_state(self._rng_checkpoint)
        return self._build_step(raw)

    def _init_training_state(self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint,
                             trial):
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        # transformers skips `steps_in_epoch` batches and restores the RNG state after the first `get_batch_samples`
        self._rng_checkpoint = resume_from_checkpoint if steps_in_epoch > 0 else None
        return epochs_trained, steps_in_epoch

    def _load_rng_state(self, checkpoint):
        if self._rng_checkpoint is not None and checkpoint == self._rng_checkpoint:
            self._rng_checkpoint = None  # already restored in `get_batch_samples`, before the rollouts were drawn
            return
        super()._load_rng_state(checkpoint)

    def _build_step(self, raw_batches: list[list[dict]]) -> tuple[list[dict], torch.Tensor]:
        args = self.args
        rows = [row for batch in raw_batches for row in batch]
        micro_of = [i for i, batch in enumerate(raw_batches) for _ in batch]
        experts = [
            Trajectory(
                row["prompt_ids"],
                truncate_completion(row["prompt_ids"], row["completion_ids"], args.max_length),
                group_id=g,
                is_expert=True,
                example_index=row[INDEX_COLUMN],
            )
            for g, row in enumerate(rows)
        ]
        correct, solv, wrong = {}, {}, {}
        if args.use_rollouts:
            selected = self._route(experts)
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

    def _route(self, experts: list[Trajectory]) -> torch.Tensor:
        """Expert-loss window: which problems of this step get rollouts ([P] bool)."""
        args = self.args
        step, every = self.state.global_step, args.window_recalibration_steps
        if self._calibration is None or (every and step - self._calibrated_at >= every):
            self._calibration = self._calibrate()
            self._calibrated_at = step
            self._counters["window/calibrations"] += 1
        nlls = self._expert_nlls(experts)  # [P]
        progress = self.state.global_step / max(self.state.max_steps, 1)
        low, high = curriculum.window_bounds(self._calibration, progress)
        regions = curriculum.window_regions(nlls, low, high)
        generator = torch.Generator().manual_seed(
            args.seed * 1_000_003 + self.state.global_step * 7919 + self.accelerator.process_index
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
        if self.state.global_step - self._synced_step >= self.args.vllm_sync_steps:
            self.generation_backend.sync_weights()
            self._synced_step = self.state.global_step
        start = time.perf_counter()
        completions = self.generation_backend.generate([experts[i].prompt_ids for i in chosen], K)
        self._counters["time/generation"] += time.perf_counter() - start
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

    def _log_trl_rollout_metrics(self, per_func: torch.Tensor, combined: list[float | None],
                                 completions: list[list[int]], truncated: list[bool]) -> None:
        """GRPO's metric names for the same quantities: `reward`, `reward_std`, `rewards/<name>/mean|std`,
        `completions/*_length`, `completions/clipped_ratio`. Global over processes (two collectives per step)."""
        judged = torch.tensor([r for r in combined if r is not None], dtype=torch.float64)
        lengths = torch.tensor([len(ids) for ids in completions], dtype=torch.float64)
        finished = lengths[~torch.tensor(truncated, dtype=torch.bool)] if completions else lengths
        local = [judged.sum(), (judged**2).sum(), len(judged)]
        for j in range(len(self.reward_funcs)):
            column = per_func[:, j][~torch.isnan(per_func[:, j])].double()
            local += [column.sum(), (column**2).sum(), len(column)]
        local += [lengths.sum(), len(lengths), finished.sum(), len(finished), sum(truncated)]
        sums = self._global_sum(local)
        inf = float("inf")
        extremes = torch.tensor([-(lengths.min() if len(lengths) else inf), lengths.max() if len(lengths) else -inf,
                                 -(finished.min() if len(finished) else inf), finished.max() if len(finished) else -inf],
                                dtype=torch.float64, device=self.accelerator.device)
        extremes = self.accelerator.gather(extremes.unsqueeze(0)).amax(dim=0).tolist()  # [4]

        def mean_std(total, squares, count):
            if count == 0:
                return None, None
            mean = total / count
            var = (squares - count * mean**2) / (count - 1) if count > 1 else 0.0
            return mean, math.sqrt(max(var, 0.0))

        names = [("reward", "reward_std")] + [(f"rewards/{n}/mean", f"rewards/{n}/std") for n in self.reward_func_names]
        for index, (mean_key, std_key) in enumerate(names):
            mean, std = mean_std(*sums[3 * index : 3 * index + 3])
            if mean is not None:
                self._metrics[mean_key].append(mean)
                self._metrics[std_key].append(std)
        total_len, count, finished_len, finished_count, clipped = sums[3 * len(names) :]
        if count:
            self._metrics["completions/mean_length"].append(total_len / count)
            self._metrics["completions/min_length"].append(-extremes[0])
            self._metrics["completions/max_length"].append(extremes[1])
            self._metrics["completions/clipped_ratio"].append(clipped / count)
        if finished_count:
            self._metrics["completions/mean_terminated_length"].append(finished_len / finished_count)
            self._metrics["completions/min_terminated_length"].append(-extremes[2])
            self._metrics["completions/max_terminated_length"].append(extremes[3])
        elif count:  # every rollout was truncated: GRPO logs 0
            for stat in ("mean", "min", "max"):
                self._metrics[f"completions/{stat}_terminated_length"].append(0.0)

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

    def _log_completion_extra(self, column: str, values: list) -> None:
        """`log_extra` of TRL's reward-function kwargs: a column for the completions table (`log_completions`)."""
        self._completion_extra[column].extend(values)

    def _log_metric(self, name: str, value: float) -> None:
        """`log_metric` of TRL's reward-function kwargs: a scalar averaged over the logging interval."""
        self._metrics[name].append(float(value))

    def _finalize_micro_batch(self, trajectories: list[Trajectory], coef: torch.Tensor) -> dict[str, torch.Tensor]:
        """Collate a micro-batch and attach its pool coefficients and reference log-probs."""
        args = self.args
        batch = collate_trajectories(trajectories, self.processing_class.pad_token_id)
        if args.loss_aggregation == "sequence_mean":
            coef = losses.sequence_mean_coefficients(coef, batch["completion_mask"])
        batch["seq_coef"] = coef
        batch["is_expert"] = torch.tensor([t.is_expert for t in trajectories])
        if args.use_ratio:
            batch["ref_logps"] = scatter_rows(self._reference_logps(trajectories), batch["completion_mask"])
        return batch

    def _reference_logps(self, trajectories: list[Trajectory]) -> list[torch.Tensor]:
        """Frozen-reference log-probs of each trajectory's completion tokens; expert ones cached (they never change)."""
        cache = self._expert_ref_cache if self.args.cache_expert_ref_logps else {}
        todo = [t for t in trajectories if not (t.is_expert and t.example_index in cache)]
        fresh = iter(self._run_reference(todo))
        out = []
        for t in trajectories:
            if t.is_expert and t.example_index in cache:
                out.append(cache[t.example_index])
                continue
            values = next(fresh)
            if t.is_expert and self.args.cache_expert_ref_logps:
                cache[t.example_index] = values
            out.append(values)
        return out

    def _run_reference(self, trajectories: list[Trajectory]) -> list[torch.Tensor]:
        out = []
        if self.ref_model is not None:
            scored = self._score(self.ref_model, trajectories)
            out = [v for logps, b in scored for v in gather_rows(logps.float().cpu(), b["completion_mask"].cpu())]
        else:  # LoRA: the same network with the adapter disabled (entered with no trajectories too: see `_score`)
            with use_adapter(self.accelerator.unwrap_model(self.model), None):
                scored = self._score(self.model, trajectories)
                out = [v for logps, b in scored for v in gather_rows(logps.float().cpu(), b["completion_mask"].cpu())]
        return out

    @torch.no_grad()
    def _score(self, model, trajectories: list[Trajectory], desc: str | None = None):
        """Yield `(per_token_logps [b, T-1], batch)` for chunks of `per_device_train_batch_size` trajectories.

        Lockstep: with several processes, every process runs as many forwards as the busiest one (a process with
        fewer trajectories scores a one-token filler for the rest). Under ZeRO-3 and FSDP a forward gathers the
        sharded parameters, a collective; unequal counts would hang. Under DDP the extra forwards run while the
        process would otherwise wait for the others."""
        size = self.args.per_device_train_batch_size
        own = -(-len(trajectories) // size)
        total = global_max(self.accelerator, own)
        chunks = range(total)
        if desc is not None and self.accelerator.is_local_main_process:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=desc)
        for index in chunks:
            if index >= own:
                self._token_logps(model, self._prepare_input(self._filler_batch()))
                self._counters["lockstep/filler_forwards"] += 1
                continue
            start = index * size
            batch = collate_trajectories(trajectories[start : start + size], self.processing_class.pad_token_id)
            batch = self._prepare_input(batch)
            yield self._token_logps(model, batch), batch

    def _filler_batch(self) -> dict[str, torch.Tensor]:
        """A one-token prompt and a one-token completion: the cheapest forward that runs every layer."""
        eos = self.eos_token_id
        return collate_trajectories([Trajectory([eos], [eos], 0, True)], self.processing_class.pad_token_id)

    @torch.no_grad()
    def _token_logps_no_grad(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._token_logps(model, self._prepare_input(batch))

    @staticmethod
    def _token_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probs at temperature 1 of `labels[:, 1:]` via TRL's fused LM head. -> [B, T-1]."""
        return RASFTTrainer._fused_forward(model, batch).log_probs

    @staticmethod
    def _fused_forward(model, batch: dict[str, torch.Tensor]):
        """The fused LM head's output (`log_probs`, and the extra fields of `_fused_outputs`, each [B, T-1]). The
        head runs inside the model's forward, so its parameters are gathered there under ZeRO-3 and FSDP."""
        return model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            fused_lm_head=True,
            use_cache=False,
        )

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

    def _logps_and_hidden(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs and the hidden states that feed the LM head (captured by a forward hook)."""
        captured = {}

        def hook(module, args, output):
            captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

        handle = self._causal_lm(model).base_model.register_forward_hook(hook)
        try:
            logps = self._token_logps(model, batch)
        finally:
            handle.remove()
        return logps, captured["hidden"]

    def _causal_lm(self, model):
        """The `*ForCausalLM` module inside accelerate / PEFT wrappers."""
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped.get_base_model() if is_peft_model(unwrapped) else unwrapped

    def _reverse_kl(self, model, batch, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary KL(pi_ref || pi_theta) at every position, in chunks. -> [B, T-1]."""
        with torch.no_grad():
            if self.ref_model is not None:
                ref_lm = self._causal_lm(self.ref_model)
                _, ref_hidden = self._logps_and_hidden(self.ref_model, batch)
            else:  # LoRA: the adapter-disabled model
                unwrapped = self.accelerator.unwrap_model(model)
                ref_lm = self._causal_lm(model)
                with use_adapter(unwrapped, None):
                    _, ref_hidden = self._logps_and_hidden(unwrapped, batch)
        # the policy's head is called as a module (ZeRO-3 gathers it in its hooks, in the forward and in the
        # recomputation); the reference's weights are read outside a forward, so gathered (a collective, the same
        # count on every process: one per micro-batch)
        head, ref_head = self._causal_lm(model).get_output_embeddings(), ref_lm.get_output_embeddings()
        with gathered_parameters([ref_head.weight, ref_head.bias]) as (ref_weight, ref_bias):
            ref_weight = ref_weight.clone()  # outlives the gather (the backward recomputes the KL blocks)
            ref_bias = None if ref_bias is None else ref_bias.clone()
        return losses.chunked_reverse_kl(
            hidden[:, :-1],
            ref_hidden[:, :-1],
            head,
            ref_weight,
            batch["completion_mask"],
            ref_bias,
            chunk_size=self.args.kl_chunk_size,
        )

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

    # ------------------------------------------------------------------ logging and state

    def _global_sum(self, values: list) -> list[float]:
        local = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(local, reduction="sum").tolist()

    def _log_pool_metrics(self, pools: list[list[Trajectory]], coefficients: torch.Tensor, is_expert: torch.Tensor):
        expert_tokens = sum(len(p[0].completion_ids) for p in pools)
        rollout_tokens = sum(len(t.completion_ids) for p in pools for t in p[1:])
        all_tokens = sum(len(t.prompt_ids) + len(t.completion_ids) for p in pools for t in p)
        totals = self._global_sum(
            [expert_tokens, rollout_tokens, coefficients[is_expert].sum(), len(pools), len(coefficients), all_tokens]
        )
        if self._num_tokens is None:  # a resumed run goes on from the checkpoint's count
            self._num_tokens = next((h["num_tokens"] for h in reversed(self.state.log_history) if "num_tokens" in h),
                                    0.0)
        self._num_tokens += totals[5]
        self._totals["targets"] += totals[4] - totals[3]
        if self.args.use_rollouts:
            self._metrics["rollouts/targets"].append(totals[4] - totals[3])  # correct rollouts trained on
        self._metrics["tokens/expert"].append(totals[0])
        self._metrics["tokens/rollout"].append(totals[1])
        self._metrics["pool/expert_coef_mean"].append(totals[2] / max(totals[3], 1))
        self._metrics["pool/mean_size"].append(totals[4] / max(totals[3], 1))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Merge the step metrics since the last log into a training log entry, and into the final one
        (`train_runtime`) when steps ran after the last logging step, as GRPOTrainer does. GRPO's rollout keys are
        always present while rollouts are on: NaN over an interval in which no rollout was drawn."""
        if self.model.training and "loss" in logs or "train_runtime" in logs and self._metrics:
            now = time.perf_counter()
            wall = now - self._last_log_time
            self._last_log_time = now
            for key, values in self._metrics.items():
                logs[key] = sum(values) / len(values) if values else 0.0
            generation = self._counters.pop("time/generation", 0.0)
            logs["time/generation_share"] = generation / wall if wall > 0 else 0.0
            logs.update({k: v for k, v in self._counters.items()})
            if self._num_tokens is not None:
                logs["num_tokens"] = self._num_tokens
            for func, name in zip(self.reward_funcs, self.reward_func_names):
                prefix = "verifier/" if len(self.reward_funcs) == 1 else f"verifier/{name}/"
                for key, value in (getattr(func, "stats", None) or {}).items():
                    if isinstance(value, (int, float)):
                        logs[prefix + key] = value
            self._metrics.clear()
            if self.args.use_rollouts:
                for key in self._rollout_log_keys():
                    logs.setdefault(key, float("nan"))
            if self.args.log_completions:
                self._log_completions_table()
        super().log(logs, start_time)

    def _rollout_log_keys(self) -> list[str]:
        """GRPO's rollout metric names (see `_log_trl_rollout_metrics`)."""
        keys = ["reward", "reward_std"]
        keys += [f"rewards/{name}/{stat}" for name in self.reward_func_names for stat in ("mean", "std")]
        keys += [f"completions/{stat}_length" for stat in ("mean", "min", "max")]
        keys += [f"completions/{stat}_terminated_length" for stat in ("mean", "min", "max")]
        return keys + ["completions/clipped_ratio"]

    def _log_completions_table(self) -> None:
        """GRPO's `log_completions`: the rollouts verified since the last log, with their rewards, printed as a
        table (`num_completions_to_print` of them, needs `rich`), saved to `<output_dir>/completions/*.parquet` and
        sent to wandb / trackio when they are in `report_to`. Gathers from all processes (a collective)."""
        from accelerate.utils import gather_object

        rows, extra = self._completion_log, dict(self._completion_extra)
        self._completion_log, self._completion_extra = [], defaultdict(list)
        extra = {k: v for k, v in extra.items() if len(v) == len(rows)}  # a column per row, or none
        rows = gather_object([(row, {k: v[i] for k, v in extra.items()}) for i, row in enumerate(rows)])
        if not self.accelerator.is_main_process or not rows:
            return
        step = self.state.global_step
        prompts = [r[0][0] for r in rows]
        completions = [r[0][1] for r in rows]
        rewards = {name: [r[0][2][j] for r in rows] for j, name in enumerate(self.reward_func_names)}
        columns = {"reward": [r[0][3] for r in rows]}
        for key in dict.fromkeys(k for r in rows for k in r[1]):
            columns[key] = [r[1].get(key) for r in rows]
        from transformers.utils import is_rich_available

        if is_rich_available():
            from trl.trainer.utils import print_prompt_completions_sample

            print_prompt_completions_sample(prompts, completions, rewards, None, step,
                                            self.args.num_completions_to_print, extra=columns)
        import pandas as pd

        table = pd.DataFrame({"step": [step] * len(rows), "prompt": [str(p) for p in prompts],
                              "completion": [str(c) for c in completions], **rewards, **columns})
        folder = os.path.join(self.args.output_dir, "completions")
        os.makedirs(folder, exist_ok=True)
        table.to_parquet(os.path.join(folder, f"completions_{step:05d}.parquet"))
        report_to = self.args.report_to or []
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                wandb.log({"completions": wandb.Table(dataframe=table)})
        if "trackio" in report_to:
            import trackio

            trackio.log({"completions": trackio.Table(dataframe=table)})

    def _save_checkpoint(self, model, trial):
        bad = [name for name, param in self.model.named_parameters() if not torch.isfinite(param.detach()).all()]
        if bad:
            raise FloatingPointError(
                f"Refusing to save checkpoint-{self.state.global_step}: {len(bad)} parameter tensors hold NaN or "
                f"inf (first: {bad[0]})."
            )
        super()._save_checkpoint(model, trial)
        if self.args.save_only_model:  # no RNG state saved (see `_save_rng_state`): the window's state goes last
            self._save_rasft_state(os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}"))

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        # before trainer_state.json, the file transformers writes last: a checkpoint that has it is complete
        self._save_rasft_state(output_dir)

    def _save_rasft_state(self, folder: str) -> None:
        """The expert-loss window's calibration, written atomically (a killed save leaves no truncated file)."""
        if self._calibration is None or not self.args.should_save:
            return
        state = {"calibration": self._calibration.to_dict(), "calibrated_at": self._calibrated_at,
                 "quantiles": self._window_quantiles()}
        partial = os.path.join(folder, STATE_FILE + ".partial")
        with open(partial, "w") as f:
            json.dump(state, f)
        os.replace(partial, os.path.join(folder, STATE_FILE))

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None,
              **kwargs):
        """As `Trainer.train`; `resume_from_checkpoint=True` takes the last *complete* checkpoint in `output_dir`
        (a process killed while saving leaves a folder without `trainer_state.json`, which is skipped with a
        warning), and a checkpoint folder that is incomplete is an error naming what is missing."""
        needs_state = self.args.use_rollouts and self._uses_window
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, needs_state)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output_dir ({self.args.output_dir}) to resume from.")
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)):
            problem = checkpoint_problem(str(resume_from_checkpoint), needs_rasft_state=False)
            if problem is not None:
                raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}.")
        with logprob_tiles(self.args.logprob_tile_tokens, self.args.logprob_tile_vocab):
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                   ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)
        if self.is_world_process_zero():
            print(self.summary(output))
        return output

    def summary(self, output=None) -> str:
        """One line on what the run did (printed at the end of `train`): steps, time, loss, the rollouts of the steps
        this process ran (a resumed run counts from its checkpoint), and the last checkpoint where the run saves
        checkpoints (the model itself is saved by `save_model`, after this line)."""
        metrics = getattr(output, "metrics", None) or {}
        parts = [f"{self._name} finished {self.state.global_step} steps"]
        engine = sharding_engine(self)
        if engine != "single":
            parts[-1] += f" ({engine}, {self.accelerator.num_processes} processes)"
        if "train_runtime" in metrics:
            parts[-1] += f" in {metrics['train_runtime']:.0f} s"
        losses = [h["loss"] for h in self.state.log_history if "loss" in h]
        if losses:
            parts.append(f"last loss {losses[-1]:.4g}")
        totals = self._totals
        if self.args.use_rollouts:
            drawn = totals["drawn"]
            accuracy = f" ({totals['correct'] / drawn:.0%} correct)" if drawn else ""
            parts.append(f"{totals['problems']:.0f} problems sampled, {drawn:.0f} rollouts{accuracy}, "
                         f"{totals['targets']:.0f} trained on")
            for key in ("rollouts/unjudged", "verifier/call_timeouts", "train/nonfinite_skipped"):
                if self._counters.get(key):
                    parts.append(f"{key} {self._counters[key]:.0f}")
        if self.args.save_strategy != "no" and os.path.isdir(self.args.output_dir):
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.args.output_dir)
            if checkpoint is not None:
                parts.append(f"last checkpoint {checkpoint}")
        return "; ".join(parts) + "."

    def _get_train_sampler(self, train_dataset=None):
        if not self.args.shuffle_dataset:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return torch.utils.data.SequentialSampler(dataset)
        return super()._get_train_sampler(train_dataset)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """As `Trainer.save_model`, plus TRL's model card (`README.md`: RASFT, the base model, the citation)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        output_dir = output_dir or self.args.output_dir
        if _internal_call or not self.is_world_process_zero():
            return
        self.write_model_card(output_dir)

    def write_model_card(self, output_dir: str, dataset_name: str | None = None) -> None:
        """TRL's model card for `output_dir` (naming the method, the base model, the dataset and the paper; a local
        model or dataset as text, see `rasft_trl.model_card`)."""
        name = self.args.hub_model_id.split("/")[-1] if self.args.hub_model_id else os.path.basename(
            os.path.normpath(output_dir))
        self.create_model_card(model_name=name, dataset_name=dataset_name)
        card = os.path.join(self.args.output_dir, "README.md")
        if os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir) and os.path.isfile(card):
            os.makedirs(output_dir, exist_ok=True)
            shutil.copyfile(card, os.path.join(output_dir, "README.md"))
            self.rewrite_card(output_dir)

    def _window_quantiles(self) -> dict[str, list[float]]:
        args = self.args
        return {"window_start_quantiles": list(args.window_start_quantiles),
                "window_end_quantiles": list(args.window_end_quantiles),
                "hard_probe_max_quantile": [args.hard_probe_max_quantile]}

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if not checkpoint or not self.args.use_rollouts or not self._uses_window:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            logger.warning(
                f"{checkpoint} has no {STATE_FILE}: the expert-loss window is calibrated again, on the trained "
                "policy, so routing differs from the uninterrupted run."
            )
            return
        try:
            with open(path) as f:
                state = json.load(f)
            calibration = curriculum.WindowCalibration.from_dict(state["calibration"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path} is damaged ({type(exc).__name__}: {exc}). Delete it to calibrate the window again on the "
                "trained policy, or resume from another checkpoint."
            ) from exc
        saved = state.get("quantiles")
        if saved is not None and saved != self._window_quantiles():
            logger.warning(
                f"The window quantiles changed since {checkpoint} was saved ({saved} -> {self._window_quantiles()}): "
                "the window is calibrated again with the new quantiles, on the trained policy."
            )
            return
        self._calibration = calibration
        self._calibrated_at = state.get("calibrated_at", 0)


@contextmanager
def logprob_tiles(tokens: int | None, vocab: int | None) -> Iterator[None]:
    """Tile sizes of TRL's fused log-prob kernel while training (`None` keeps TRL's). TRL reads them as module
    globals at call time, in the forward and in the backward, so they are set for the whole `train()` call."""
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


def checkpoint_problem(folder: str, needs_rasft_state: bool) -> str | None:
    """Why `folder` is not a complete checkpoint, or None. transformers writes `trainer_state.json` last (RASFT's
    `rasft_state.json` just before it), so a save killed half-way leaves it missing or truncated."""
    if not os.path.isdir(folder):
        return "it is not a folder"
    names = ["trainer_state.json"] + ([STATE_FILE] if needs_rasft_state else [])
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing (the save was interrupted?)"
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError) as exc:
            return f"{name} is damaged ({type(exc).__name__}: {exc})"
    return None


def last_complete_checkpoint(output_dir: str, needs_rasft_state: bool) -> str | None:
    """The `checkpoint-<step>` folder of `output_dir` with the highest step that is complete (see
    `checkpoint_problem`); incomplete later ones are skipped with a warning. None if there is none."""
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(name.split("-", 1)[1]), name)
        for name in os.listdir(output_dir)
        if name.startswith("checkpoint-") and name.split("-", 1)[1].isdigit()
        and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder, needs_rasft_state)
        if problem is None:
            return folder
        logger.warning(f"Skipping {folder} when resuming: {problem}.")
    return None


def check_args_position(args: Any, config_cls: type) -> None:
    """`args` must be the config (or None). A list, a string or a callable there is GRPOTrainer's argument order,
    `(model, reward_funcs, args, train_dataset)`: say how to call this trainer instead."""
    from transformers import TrainingArguments

    if args is None or isinstance(args, TrainingArguments):
        return
    raise TypeError(
        f"The second argument is `args`, a {config_cls.__name__}; got {type(args).__name__} ({args!r:.60}). This is "
        "GRPOTrainer's order (model, reward_funcs, args, train_dataset); here reward functions are a keyword: "
        f"`{config_cls.__name__.replace('Config', 'Trainer')}(model, args=config, train_dataset=dataset, "
        "reward_funcs=...)`."
    )


#: What `call_with_timeout` returns for a call that did not return in time (a function may itself return None).
TIMED_OUT = object()


def call_with_timeout(fn: Callable[[], Any], timeout: float | None) -> Any:
    """`fn()`, or `TIMED_OUT` when it has not returned after `timeout` seconds (`None`: wait for ever).

    The call runs in a daemon thread; a call that never returns is abandoned, not killed (Python cannot kill a
    thread): give slow verifiers their own time limits (the built-in ones have them).
    """
    if timeout is None:
        return fn()
    import threading

    result: dict[str, Any] = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, name="rasft-verifier", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return TIMED_OUT
    if "error" in result:
        raise result["error"]
    return result["value"]


def _frozen_reference(model: PreTrainedModel, model_id: str, args: RASFTConfig) -> PreTrainedModel:
    """The frozen reference of full fine-tuning: a copy of the initial policy, made before any patching or wrapping.

    Under DeepSpeed ZeRO-3 the loaded policy's parameters are already partitioned (`zero.Init`), and a copy of a
    partitioned module is an empty shell: the reference is loaded again from the policy's path, as GRPOTrainer does,
    so that it is partitioned too."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        if not model_id:
            raise ValueError(
                "Under DeepSpeed ZeRO-3 the frozen reference is loaded again from the model's path, and this model has "
                f"none (config._name_or_path={model_id!r}): save it with `save_pretrained` and pass the folder."
            )
        return create_model_from_path(model_id, **_init_kwargs(args)).eval().requires_grad_(False)
    return copy.deepcopy(model).eval().requires_grad_(False)


def _identity_collator(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows


def _init_kwargs(args: RASFTConfig) -> dict:
    kwargs = dict(args.model_init_kwargs or {})
    if isinstance(args.model_init_kwargs, str):
        kwargs = json.loads(args.model_init_kwargs)
    if kwargs.get("quantization_config") is not None and kwargs.get("device_map") is None:
        # bitsandbytes quantizes the weights as they are placed: load each process's copy onto its own device
        from accelerate import PartialState

        state = PartialState()
        kwargs["device_map"] = {"": state.device.type if state.device.index is None else str(state.device)}
    kwargs.setdefault("device_map", None)
    if args.trust_remote_code:
        kwargs.setdefault("trust_remote_code", True)
    return kwargs
