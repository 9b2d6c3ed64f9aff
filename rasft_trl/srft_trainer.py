"""SRFTTrainer: Supervised Reinforcement Fine-Tuning on the same scaffolding as RASFT.

One optimizer step: (1) draw `G` rollouts for every problem of the step through the shared generation backend and
verify them with the shared reward functions (`RASFTTrainer._sample_and_verify`), (2) put each problem's
demonstration into its rollout group and compute the group advantages (Eqs. 6, 7), (3) collate each problem's
demonstration and its judged rollouts into the problem's micro-batch, with each row's role (demonstration, positive,
negative) and the step's token count per role, so that every term is a token mean over the whole step. The loss
(`compute_loss`) computes the policy entropy in the training forward and adds the four terms of `srft_losses`. The
algebra lives in `srft_losses.py`; data handling, generation, verification, LoRA / QLoRA, vLLM, logging,
checkpoints and resuming are RASFTTrainer's (with its mixins in `trainer_metrics.py`, `checkpoints.py`, `scoring.py`).
"""

from __future__ import annotations

import torch
from transformers.utils import logging


from . import srft_losses
from .data import INDEX_COLUMN, Trajectory, collate_trajectories, truncate_completion
from .rasft_trainer import RASFTTrainer
from .srft_config import SRFTConfig
from .trainer_utils import check_args_position

logger = logging.get_logger(__name__)

DEMO, POSITIVE, NEGATIVE = 0, 1, 2


class SRFTTrainer(RASFTTrainer):
    """Trainer for SRFT (Fu et al.): one stage of demonstrations and the policy's own rollouts, entropy-weighted.

    Same arguments as [`RASFTTrainer`] with an [`SRFTConfig`]; `reward_funcs` / `verifier` default to `"math"`. The
    dataset needs the prompt, the expert demonstration (`completion_column`) and the reward functions' columns. No
    reference model is loaded: no SRFT term reads one.
    """

    _tag_names = ["trl", "srft"]
    _name = "SRFT"
    _paper = {
        "title": "SRFT: A Single-Stage Method with Supervised and Reinforcement Fine-Tuning for Reasoning",
        "id": "2506.19767",
        "citation": (
            "@article{fu2025srft,\n"
            "    title        = {{SRFT: A Single-Stage Method with Supervised and Reinforcement Fine-Tuning for "
            "Reasoning}},\n"
            "    author       = {Yuqian Fu and Tinghong Chen and Jiajun Chai and Xihuai Wang and Songjun Tu and "
            "Guojun Yin and Wei Lin and Qichao Zhang and Yuanheng Zhu and Dongbin Zhao},\n"
            "    year         = 2025,\n"
            "    journal      = {arXiv preprint arXiv:2506.19767}\n"
            "}"
        ),
    }
    _uses_window = False
    # the policy entropy comes out of the training forward, computed by the fused LM head where its parameters are
    # gathered (under ZeRO-3 / FSDP2 the head's weight read outside the forward is empty / a shard)
    _fused_outputs = ("log_probs", "entropy")

    def __init__(self, model, args: SRFTConfig | None = None, *pos, **kwargs):
        check_args_position(args, SRFTConfig)
        if args is None:
            args = SRFTConfig(f"{str(model).split('/')[-1]}-SRFT")
        if not isinstance(args, SRFTConfig):
            raise TypeError(f"SRFTTrainer needs an SRFTConfig, got {type(args).__name__}.")
        super().__init__(model, args, *pos, **kwargs)
        self._warn_if_rollouts_cannot_fit()

    def _warn_if_rollouts_cannot_fit(self) -> None:
        """Warn once when the longest prompt plus `max_new_tokens` exceeds `max_length`: such rollouts are left out
        of their group and of every term (`rollouts/too_long`)."""
        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "__len__") or "prompt_ids" not in (dataset.column_names or []):
            return
        longest = max((len(ids) for ids in dataset["prompt_ids"]), default=0)
        if longest + self.args.max_new_tokens > self.args.max_length:
            logger.warning(
                f"The longest prompt ({longest} tokens) plus max_new_tokens={self.args.max_new_tokens} exceeds "
                f"max_length={self.args.max_length}: rollouts that do not fit are left out of their group's "
                "statistics and of every loss term (counted in rollouts/too_long). Raise max_length to at least "
                f"{longest + self.args.max_new_tokens} to train on every rollout."
            )

    # ------------------------------------------------------------------ one optimizer step

    def _build_step(self, raw_batches: list[list[dict]]) -> tuple[list[dict], torch.Tensor]:
        args, G = self.args, self.args.num_rollouts
        rows = [row for batch in raw_batches for row in batch]
        micro_of = [i for i, batch in enumerate(raw_batches) for _ in batch]
        demos = [
            Trajectory(row["prompt_ids"], truncate_completion(row["prompt_ids"], row["completion_ids"],
                                                              args.max_length),
                       group_id=g, is_expert=True, example_index=row[INDEX_COLUMN])
            for g, row in enumerate(rows)
        ]
        completions, rewards, truncated, _ = self._sample_and_verify(rows, demos, list(range(len(rows))), G)
        # A judged rollout longer than max_length cannot be trained on: it leaves its group's statistics too, so that
        # no rollout is counted in the group while dropped from the terms (long rollouts are more often wrong).
        fits = [len(demos[i // G].prompt_ids) + len(c) <= args.max_length for i, c in enumerate(completions)]
        too_long = sum(r is not None and not f for r, f in zip(rewards, fits))
        # Eqs. 6, 7: the demonstration joins its rollout group; unjudged rollouts (NaN) stay out of the statistics.
        group_rewards = torch.full((len(rows), G + 1), float("nan"))  # [P, G + 1], demonstration last
        for i, reward in enumerate(rewards):
            if reward is not None and fits[i]:
                group_rewards[i // G, i % G] = float(reward)
        group_rewards[:, G] = args.demo_reward
        advantages = srft_losses.group_advantages(group_rewards, args.advantage_epsilon)  # [P, G + 1]

        micro = [[] for _ in raw_batches]  # per micro-batch: (trajectory, role, advantage)
        masked_truncated = 0
        for g, demo in enumerate(demos):
            micro[micro_of[g]].append((demo, DEMO, float(advantages[g, G])))
            for k in range(G):
                i = g * G + k
                if rewards[i] is None or not fits[i]:
                    continue  # filtered out, not judged or too long: neither positive nor negative, not in the group
                if args.mask_truncated_completions and truncated[i]:
                    masked_truncated += 1  # in the group's statistics (as TRL's GRPO), out of the terms
                    continue
                role = POSITIVE if rewards[i] >= args.correct_threshold else NEGATIVE
                rollout = Trajectory(demo.prompt_ids, completions[i], group_id=g, is_expert=False)
                micro[micro_of[g]].append((rollout, role, float(advantages[g, k])))

        tokens = [0, 0, 0]  # demonstration, positive, negative tokens of this process
        for entries in micro:
            for trajectory, role, _ in entries:
                tokens[role] += len(trajectory.completion_ids)
        judged = [r for r in rewards if r is not None]
        positives = sum(r >= args.correct_threshold for r in judged)
        all_tokens = sum(len(t.prompt_ids) + len(t.completion_ids) for entries in micro for t, _, _ in entries)
        totals = self._global_sum([*tokens, len(rows), len(completions), len(judged), positives, too_long,
                                   masked_truncated, sum(truncated), float(advantages[:, G].sum()), all_tokens])
        counts = torch.tensor(totals[:3], dtype=torch.float32)  # the step's tokens per role, all processes
        batches = []
        for entries in micro:
            batch = collate_trajectories([t for t, _, _ in entries], self.processing_class.pad_token_id)
            batch["srft_role"] = torch.tensor([role for _, role, _ in entries])
            batch["srft_advantage"] = torch.tensor([adv for _, _, adv in entries], dtype=torch.float32)
            batch["srft_counts"] = counts
            batch["srft_micro_batches"] = torch.tensor(len(raw_batches))
            batches.append(batch)
        self._log_step_metrics(totals)
        return batches, torch.tensor(sum(totals[:3]), device=self.accelerator.device)

    def _log_step_metrics(self, totals: list[float]) -> None:
        demo_tokens, pos_tokens, neg_tokens, problems, drawn, judged, positives, too_long = totals[:8]
        masked_truncated, truncated, demo_advantage, all_tokens = totals[8:]
        self._count_tokens(all_tokens)
        self._metrics["rollouts/problems"].append(problems)
        self._metrics["rollouts/drawn"].append(drawn)
        self._metrics["rollouts/truncated"].append(truncated)
        if judged:
            self._metrics["rollouts/accuracy"].append(positives / judged)
        self._metrics["tokens/expert"].append(demo_tokens)
        self._metrics["tokens/positive"].append(pos_tokens)
        self._metrics["tokens/negative"].append(neg_tokens)
        self._metrics["srft/demo_advantage"].append(demo_advantage / max(problems, 1))
        self._counters["rollouts/unjudged"] += drawn - judged
        self._counters["rollouts/too_long"] += too_long
        self._counters["rollouts/truncated_masked"] += masked_truncated
        self._totals["problems"] += problems
        self._totals["drawn"] += drawn
        self._totals["correct"] += positives
        self._totals["targets"] += judged - too_long - masked_truncated

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Eq. 13: `L1 + L2 + L3 + L4`, each a token mean over the step's tokens of its role."""
        args = self.args
        output = self._fused_forward(model, inputs)
        logps = output.log_probs  # [B, T-1]
        mask = inputs["completion_mask"]  # [B, T-1]
        role = inputs["srft_role"].to(mask.device)  # [B]
        counts = inputs["srft_counts"].tolist()  # [3]
        is_demo, is_pos, is_neg = ((role == r).unsqueeze(-1) for r in (DEMO, POSITIVE, NEGATIVE))  # [B, 1] each

        entropy_rows = {"all": torch.ones_like(is_demo), "rollouts": ~is_demo, "demonstrations": is_demo}
        entropy_mask = mask * entropy_rows[args.entropy_tokens]  # [B, T-1]
        entropy = output.entropy.detach().float() * entropy_mask  # [B, T-1], no gradient

        n_pos, n_neg = srft_losses.rollout_token_counts(counts[POSITIVE], counts[NEGATIVE], args.rollout_normalization)
        # the terms before their entropy weights (w_SFT, w_RL are stop-gradient scalars, so the weighted terms are
        # these times the weights); with gradient, this process's share of the step's value
        terms = {
            "demo_sft": srft_losses.demo_sft_term(logps, mask * is_demo, 1.0, counts[DEMO]),
            "pos": srft_losses.positive_term(logps, mask * is_pos, 1.0, n_pos),
            "neg": srft_losses.negative_term(logps, mask * is_neg, args.negative_weight, n_neg),
        }
        if args.demo_rl:
            advantages = inputs["srft_advantage"].to(logps.device)  # [B]
            terms["demo_rl"] = srft_losses.demo_rl_term(logps, mask * is_demo, advantages, counts[DEMO])
        # one collective for the entropy of the micro-batch and the terms' values summed over processes
        totals = self._global_sum([float(entropy.sum()), float(entropy_mask.sum()),
                                   *(float(v.detach()) for v in terms.values())])
        mean_entropy = totals[0] / max(totals[1], 1.0)
        w_sft, w_rl = srft_losses.entropy_weights(mean_entropy, args.sft_weight_scale, args.rl_weight_scale,
                                                  args.entropy_weight_sft, args.entropy_weight_rl)
        weights = {"demo_sft": w_sft, "pos": w_rl}
        loss = sum(weights.get(name, 1.0) * value for name, value in terms.items())
        # each micro-batch's all-process value is its share of the step's term: x micro-batches, their mean over the
        # step (what the log reports) is the step's value
        share = float(inputs["srft_micro_batches"])
        for (name, _), total in zip(terms.items(), totals[2:]):
            self._metrics[f"srft/loss_{name}"].append(weights.get(name, 1.0) * total * share)
        self._metrics["srft/entropy"].append(mean_entropy)
        self._metrics["srft/w_sft"].append(w_sft)
        self._metrics["srft/w_rl"].append(w_rl)
        loss = self._finish_loss(loss, num_items_in_batch)
        return (loss, None) if return_outputs else loss
