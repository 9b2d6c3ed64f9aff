"""Metrics and logging of the trainers (RASFT, SRFT, the baselines): `TrainerMetricsMixin`.

A step appends to `_metrics` (averaged over the logging interval; a key ending in `_max`: its maximum), `_counters`
(running counts) and `_totals` (run totals for the end-of-training `summary`); `log` merges them into transformers'
log entries. Beside the method's own
keys (`docs/metrics.md`), the rollouts are logged under GRPO's names (`reward`, `rewards/<name>/mean`,
`completions/*_length`, ...), and `log_completions` prints, saves (parquet) and reports (wandb / trackio) the
verified rollouts as GRPO's completions table.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict

import torch

from .data import Trajectory
from .distributed import sharding_engine


class TrainerMetricsMixin:
    """Logging of the trainer (before `_BaseTrainer` in the bases). Reads `_metrics`, `_counters`, `_totals`,
    `_num_tokens`, `_completion_log`, `_completion_extra`, `_last_log_time` and the reward functions, which the
    trainer sets."""

    def _global_sum(self, values: list) -> list[float]:
        local = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(local, reduction="sum").tolist()

    def _count_tokens(self, step_tokens: float) -> None:
        """Add the step's tokens (prompts and completions, all processes) to TRL's `num_tokens`."""
        if self._num_tokens is None:  # a resumed run goes on from the checkpoint's count
            self._num_tokens = next((h["num_tokens"] for h in reversed(self.state.log_history) if "num_tokens" in h),
                                    0.0)
        self._num_tokens += step_tokens

    def _count_generated(self, step_tokens: float) -> None:
        """Add the step's generated rollout tokens (all processes) to the running total `rollouts/generated_tokens`
        (a resumed run goes on from the checkpoint's log): the study's compute column, exact under any
        `logging_steps`, where the interval means of `completions/mean_length` and `rollouts/drawn` are not."""
        key = "rollouts/generated_tokens"
        if key not in self._counters:
            self._counters[key] = next((h[key] for h in reversed(self.state.log_history) if key in h), 0.0)
        self._counters[key] += step_tokens

    def _log_pool_metrics(self, pools: list[list[Trajectory]], coefficients: torch.Tensor, is_expert: torch.Tensor):
        expert_tokens = sum(len(p[0].completion_ids) for p in pools)
        rollout_tokens = sum(len(t.completion_ids) for p in pools for t in p[1:])
        all_tokens = sum(len(t.prompt_ids) + len(t.completion_ids) for p in pools for t in p)
        totals = self._global_sum(
            [expert_tokens, rollout_tokens, coefficients[is_expert].sum(), len(pools), len(coefficients), all_tokens]
        )
        self._count_tokens(totals[5])
        self._totals["targets"] += totals[4] - totals[3]
        if self.args.use_rollouts:
            self._metrics["rollouts/targets"].append(totals[4] - totals[3])  # correct rollouts trained on
        self._metrics["tokens/expert"].append(totals[0])
        self._metrics["tokens/rollout"].append(totals[1])
        self._metrics["pool/expert_coef_mean"].append(totals[2] / max(totals[3], 1))
        self._metrics["pool/mean_size"].append(totals[4] / max(totals[3], 1))

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
        self._count_generated(total_len)
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

    def _log_completion_extra(self, column: str, values: list) -> None:
        """`log_extra` of TRL's reward-function kwargs: a column for the completions table (`log_completions`)."""
        self._completion_extra[column].extend(values)

    def _log_metric(self, name: str, value: float) -> None:
        """`log_metric` of TRL's reward-function kwargs: a scalar averaged over the logging interval."""
        self._metrics[name].append(float(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Merge the step metrics since the last log into a training log entry, and into the final one
        (`train_runtime`) when steps ran after the last logging step, as GRPOTrainer does. GRPO's rollout keys are
        always present while rollouts are on: NaN over an interval in which no rollout was drawn."""
        if self.model.training and "loss" in logs or "train_runtime" in logs and self._metrics:
            now = time.perf_counter()
            wall = now - self._last_log_time
            self._last_log_time = now
            for key, values in self._metrics.items():
                if key.endswith("_max"):  # an extremum over the interval (`sample/staleness_max`, as TRL's AsyncGRPO)
                    logs[key] = max(values) if values else 0.0
                else:
                    logs[key] = sum(values) / len(values) if values else 0.0
            generation = self._counters.pop("time/generation", 0.0)
            logs["time/generation_share"] = generation / wall if wall > 0 else 0.0
            background = self._counters.pop("time/generation_background", 0.0)  # max_staleness=1
            logs["time/generation_background_share"] = background / wall if wall > 0 else 0.0
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
