"""Dataset checks, tokenization and batch building for RASFT.

A RASFT dataset has one row per problem: a prompt, an expert demonstration (completion) and whatever the
verifier reads (`answer` for math, `tests` for code, ...). Bad rows are rejected before training with the column
and the row index in the message; nothing is dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from .verifiers.base import completion_text


INDEX_COLUMN = "rasft_index"
logger = logging.getLogger(__name__)


def validate_columns(
    column_names: list[str], required: list[str], which: str = "training"
) -> None:
    """Raise a `ValueError` naming every required column the dataset (`which`: "training", "evaluation 'b'") lacks."""
    missing = [name for name in required if name not in column_names]
    if missing:
        raise ValueError(
            f"The {which} dataset is missing the column(s) {missing}; it has {sorted(column_names)}. RASFT and "
            "SRFT need a prompt, an expert completion (the demonstration) and the column the verifier reads."
        )


def validate_rows(dataset, prompt_column: str, completion_column: str, string_columns: list[str]) -> None:
    """Reject empty or malformed prompts / completions and non-string values in `string_columns`, naming column and
    row. A prompt is a non-empty string or a non-empty list of `{"role": str, "content": str}` messages; a completion
    is a non-empty string or such messages (its text is the last message's content)."""
    if len(dataset) == 0:
        raise ValueError("The dataset has no rows.")
    columns = [prompt_column, completion_column, *string_columns]
    for index, values in enumerate(zip(*(dataset[column] for column in columns))):
        validate_row(dict(zip(columns, values)), index, prompt_column, completion_column, string_columns)


def validate_row(row: dict, index: int, prompt_column: str, completion_column: str, string_columns: list[str]) -> None:
    """`validate_rows` for one row (a streamed dataset is checked row by row as it is read)."""
    problem = message_problem(row[prompt_column], "prompt")
    if problem:
        raise ValueError(f"Column {prompt_column!r}, row {index}: {problem}.")
    problem = message_problem(row[completion_column], "expert completion")
    if problem:
        raise ValueError(f"Column {completion_column!r}, row {index}: {problem}.")
    for column in string_columns:
        value = row[column]
        if not isinstance(value, str):
            raise ValueError(
                f"Column {column!r}, row {index}: expected a string, got {type(value).__name__} ({value!r:.60}). "
                f"Convert the column first, e.g. `dataset.map(lambda r: {{{column!r}: str(r[{column!r}])}})`."
            )


def message_problem(value: Any, what: str) -> str | None:
    """Why `value` is not a usable prompt / completion (a string or chat messages), or None when it is."""
    if value is None:
        return f"the {what} is empty (None)"
    if isinstance(value, str):
        return f"the {what} is empty" if not value.strip() else None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return f"the {what} is a {type(value).__name__} ({value!r:.60}); expected a string or a list of chat messages"
    if not value:
        return f"the {what} is empty"
    for position, message in enumerate(value):
        if not isinstance(message, dict):
            return (
                f"message {position} of the {what} is a {type(message).__name__} ({message!r:.40}), not a "
                "{'role': ..., 'content': ...} dict (a list of strings is not a chat: join it into one string or "
                "build messages)"
            )
        for key in ("role", "content"):
            if message.get(key) is None:
                return f"message {position} of the {what} has no {key!r} (it has {sorted(message)})"
        if not isinstance(message["role"], str):
            return f"message {position} of the {what} has a non-string role ({message['role']!r:.40})"
        if not isinstance(message["content"], (str, list)):
            return f"message {position} of the {what} has content of type {type(message['content']).__name__}"
    if not completion_text(value).strip():
        return f"the {what}'s last message is empty"
    return None


def tokenize_prompt(tokenizer, prompt: Any, chat_template_kwargs: dict | None = None) -> list[int]:
    """Token ids of a prompt: a plain string is tokenized as is, a list of chat messages through the chat template
    with a generation prompt (and `chat_template_kwargs`, e.g. `{"enable_thinking": False}`)."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False,
                                        **(chat_template_kwargs or {}))
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding regardless
        ids = ids["input_ids"]
    return list(ids)


def tokenize_completion(tokenizer, completion: Any, eos_token_id: int) -> list[int]:
    """Token ids of an expert completion, ending with the EOS token (what a rollout ends with)."""
    ids = tokenizer(completion_text(completion), add_special_tokens=False)["input_ids"]
    return list(ids) + [eos_token_id]


def check_prompt_lengths(prompt_lengths: list[int], max_length: int, prompt_column: str, first_row: int = 0) -> None:
    """A prompt that leaves no room for a single completion token cannot be trained on: reject it (rows numbered
    from `first_row`)."""
    for index, length in enumerate(prompt_lengths, start=first_row):
        if length >= max_length:
            raise ValueError(
                f"Column {prompt_column!r}, row {index}: the prompt is {length} tokens long, which leaves no room "
                f"for a completion within max_length={max_length}. Raise `max_length` or shorten the prompt."
            )


def tokenize_dataset(dataset, tokenizer, args, split: str, references: list[str], eos_token_id: int,
                     counters: dict[str, float]):
    """Validate a training or evaluation set (`split`: "train", "eval", "eval_<name>") and tokenize it: the columns
    `prompt_ids`, `completion_ids` and `INDEX_COLUMN`. `references`: the columns the reward functions read. The count
    of demonstrations longer than `args.max_length` goes to `counters["data/<split>_expert_truncated"]`; a streamed
    set (`IterableDataset`) is checked and tokenized lazily, as the trainer reads it, and its count grows as it
    goes."""
    from datasets import IterableDataset

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
        completion_ids = tokenize_completion(tokenizer, row[args.completion_column], eos_token_id)
        if streaming:
            check_prompt_lengths([len(prompt_ids)], args.max_length, args.prompt_column, first_row=index)
            counters[counter] += len(prompt_ids) + len(completion_ids) > args.max_length
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, INDEX_COLUMN: index}

    if streaming:  # tokenized lazily, as the trainer reads it; the truncation count grows as it goes
        counters[counter] = 0
        return dataset.map(tokenize, with_indices=True)
    dataset = dataset.map(tokenize, with_indices=True, desc=f"Tokenizing {split} dataset")
    check_prompt_lengths([len(ids) for ids in dataset["prompt_ids"]], args.max_length, args.prompt_column)
    overlong = sum(p + c > args.max_length for p, c in zip(
        map(len, dataset["prompt_ids"]), map(len, dataset["completion_ids"])))
    if overlong:
        logger.warning(f"{overlong} {split} demonstrations exceed max_length={args.max_length} and are truncated.")
    counters[counter] = overlong
    return dataset


@dataclass
class Trajectory:
    """One row of a training batch: a prompt and a target completion, with its pool bookkeeping."""

    prompt_ids: list[int]
    completion_ids: list[int]
    group_id: int
    is_expert: bool
    solvability: float = 0.0
    example_index: int = -1  # dataset row of the problem (used to cache expert reference log-probs)
    num_incorrect: int = 0  # verified-incorrect rollouts of the problem (group_advantage weighting)


def truncate_completion(prompt_ids: list[int], completion_ids: list[int], max_length: int) -> list[int]:
    """Cut the completion so that prompt + completion fits in `max_length`."""
    return completion_ids[: max(max_length - len(prompt_ids), 0)]


def collate_trajectories(trajectories: list[Trajectory], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors for a list of trajectories.

    Returns:
        `input_ids` [B, L], `attention_mask` [B, L], `labels` [B, L] (-100 outside completions; TRL's fused LM
        head scores exactly these positions) and `completion_mask` [B, L-1] aligned with the per-token log-probs
        of `labels[:, 1:]`. The mask is built from positions, never from the pad id (pad may equal EOS).
    """
    lengths = [len(t.prompt_ids) + len(t.completion_ids) for t in trajectories]
    width = max(lengths)
    batch = len(trajectories)
    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    labels = torch.full((batch, width), -100, dtype=torch.long)
    for row, traj in enumerate(trajectories):
        prompt_len, total = len(traj.prompt_ids), lengths[row]
        input_ids[row, :total] = torch.tensor(traj.prompt_ids + traj.completion_ids, dtype=torch.long)
        attention_mask[row, :total] = 1
        labels[row, prompt_len:total] = input_ids[row, prompt_len:total]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "completion_mask": (labels[:, 1:] != -100).long(),
    }


def scatter_rows(values: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Place per-row completion values (row `b`: a [n_b] tensor, `n_b = mask[b].sum()`) into a [B, T] tensor at the
    masked positions, zeros elsewhere."""
    out = torch.zeros(mask.shape, dtype=values[0].dtype if values else torch.float32)
    if values:
        out[mask.bool()] = torch.cat([v.to(out.dtype) for v in values])
    return out


def gather_rows(values: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of [`scatter_rows`]: the masked values of each row of a [B, T] tensor."""
    return [row[m.bool()] for row, m in zip(values, mask)]


def assemble_pools(
    experts: list[Trajectory],
    correct_rollouts: dict[int, list[list[int]]],
    solvabilities: dict[int, float],
    num_incorrect: dict[int, int] | None = None,
) -> list[list[Trajectory]]:
    """Candidate pool of each problem: its expert demonstration followed by its correct rollouts (method section 3).

    Args:
        experts: one expert trajectory per problem; `group_id` identifies the problem.
        correct_rollouts: group id -> completion ids of the rollouts the verifier accepted.
        solvabilities: group id -> solvability `s(x)` (problems without rollouts are absent: `s` is unused then).
        num_incorrect: group id -> verified-incorrect rollouts (only read by the group-advantage weighting).

    Returns:
        One list per problem, expert first.
    """
    pools = []
    for expert in experts:
        s = solvabilities.get(expert.group_id, 0.0)
        wrong = (num_incorrect or {}).get(expert.group_id, 0)
        expert.solvability, expert.num_incorrect = s, wrong
        pool = [expert]
        for completion in correct_rollouts.get(expert.group_id, []):
            pool.append(Trajectory(expert.prompt_ids, completion, expert.group_id, False, s, expert.example_index, wrong))
        pools.append(pool)
    return pools
