"""Reward functions as RASFT's verifiers, in `GRPOTrainer`'s contract.

RASFT asks one question of a rollout: is it correct? It takes the answer from reward functions written for TRL:
`reward_funcs` is a callable, a registered verifier name (`"math"`, `"code"`) or a list of them, weighted by
`reward_weights`. Each function is called as `GRPOTrainer` calls it,

    func(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=..., log_metric=...,
         **dataset_columns)

with the completions in TRL's format (a string, or `[{"role": "assistant", "content": ...}]` when the prompt is a
list of messages). Per rollout, the rewards combine into one value as in GRPO, the weighted sum over the functions
that returned a number (`None` / NaN are skipped); a rollout for which no function returned a number is *unjudged*.
The rollout is correct when that sum is at least `correct_threshold`.

The contract, checked at every call (`reward_column`): a function returns a list with one entry per completion, a
finite number or `None` / NaN (not judged). Returning `None` instead of a list, a list of another length, a value
that is not a number, or an infinite one stops training with an error naming the function (an infinite reward would
make a rollout "correct" and the logged reward NaN). Each function gets its own copies of the arguments
(`reward_inputs`): one that edits them in place changes neither the rollouts trained on nor what is logged or given
to the next function.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import sys
from typing import Any, Callable

import torch


def resolve_reward_funcs(reward_funcs: Any, verifier: Any) -> tuple[list[Callable], list[str]]:
    """The reward functions and their log names from `reward_funcs` or its alias `verifier` (one of them).

    Names: the registered name for a string, else the callable's `__name__` (its class name for an object without
    one); repeated names get a `_<index>` suffix so that `rewards/<name>/mean` keys stay apart."""
    from .verifiers.registry import get_verifier

    if reward_funcs is not None and verifier is not None:
        raise ValueError("Pass `reward_funcs` or its alias `verifier`, not both.")
    given = reward_funcs if reward_funcs is not None else verifier
    if given is None:
        return [], []
    items = list(given) if isinstance(given, (list, tuple)) else [given]
    if not items:
        raise ValueError("`reward_funcs` is an empty list; pass at least one reward function or verifier name.")
    funcs, names = [], []
    for item in items:
        if isinstance(item, torch.nn.Module):
            raise TypeError(
                "A reward model (nn.Module) cannot decide whether a rollout is correct; RASFT needs a verifier "
                "(a rule-based reward function). Wrap the model in a function that returns 1.0 / 0.0 if you must."
            )
        if isinstance(item, str):
            func, name = _named_reward(item, get_verifier)
            funcs.append(func)
            names.append(name)
        elif callable(item):
            funcs.append(item)
            names.append(getattr(item, "__name__", None) or type(item).__name__)
        else:
            raise TypeError(f"A reward function must be a callable or a registered verifier name, got {item!r}.")
    counts = {name: names.count(name) for name in names}
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if counts[name] > 1:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name}_{seen[name] - 1}"
    return funcs, names


TRL_REWARDS = ("accuracy_reward", "reasoning_accuracy_reward", "think_format_reward")


def _named_reward(name: str, get_verifier: Callable) -> tuple[Callable, str]:
    """A reward function named by a string: a registered verifier (`"math"`), one of TRL's reward functions by the
    name TRL's scripts use (`"accuracy_reward"`), or a dotted path to a function (`"my_pkg.rewards.fn"`, as TRL's
    scripts take `reward_funcs`). A Hub id or a folder (a reward model, which
    GRPOTrainer would load) is refused with the reason."""
    from .verifiers.registry import registered_verifiers

    registered = registered_verifiers()
    if name in registered:
        return get_verifier(name), name
    if name in TRL_REWARDS:  # the names TRL's `trl grpo` script takes
        import trl.rewards

        return getattr(trl.rewards, name), name
    if "/" in name or os.path.isdir(name):
        raise ValueError(
            f"reward_funcs={name!r} looks like a reward model (a Hub id or a folder). Reward models are not "
            "supported: RASFT keeps a rollout only if it is verified correct, and a reward model's score has no "
            "threshold that means 'correct'. Pass a rule-based reward function or a registered verifier "
            f"({registered}), or wrap the model in a function that returns 1.0 / 0.0."
        )
    module_name, _, attribute = name.rpartition(".")
    if module_name:
        import importlib

        if os.getcwd() not in sys.path:  # as TRL's scripts: a module next to the recipe is found
            sys.path.append(os.getcwd())
        try:
            func = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"reward_funcs={name!r}: cannot import {attribute!r} from {module_name!r} "
                             f"({exc}).") from exc
        if not callable(func):
            raise TypeError(f"reward_funcs={name!r} is not callable.")
        return func, attribute
    return get_verifier(name), name  # an unknown name: the registry's error lists the registered ones


def resolve_awaitable(value: Any) -> Any:
    """The result of a reward function: an `async def` function's coroutine is run to completion (in a thread of
    its own when an event loop already runs in this one, as in a notebook); anything else is returned as it is."""
    if not inspect.isawaitable(value):
        return value
    import asyncio

    async def wait():
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout of `model` at 0: `nn.Dropout` modules (what TRL's `disable_dropout_in_model` covers) and the
    functional attention dropout of transformers' attention modules (`attention_dropout`, Llama / Qwen2)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0
    config = getattr(model, "config", None)
    if isinstance(getattr(config, "attention_dropout", None), float):
        config.attention_dropout = 0.0


def is_conversational_prompt(prompt: Any) -> bool:
    """A prompt given as a list of `{"role", "content"}` messages (TRL's conversational format)."""
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict) and "role" in prompt[0]


def trl_completions(prompts: list, texts: list[str]) -> list:
    """Completions as TRL passes them to reward functions: `[{"role": "assistant", "content": text}]` for a
    conversational prompt, the text otherwise."""
    return [
        [{"role": "assistant", "content": text}] if is_conversational_prompt(prompt) else text
        for prompt, text in zip(prompts, texts)
    ]


def combine_rewards(rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each rollout's rewards over the functions that judged it (GRPO's `nansum`); NaN where none did.

    rewards: [N, F] (NaN = not judged by that function); weights: [F] -> [N]."""
    judged = ~torch.isnan(rewards)  # [N, F]
    total = torch.where(judged, rewards * weights, torch.zeros_like(rewards)).sum(dim=1)  # [N]
    return torch.where(judged.any(dim=1), total, torch.full_like(total, float("nan")))


def reward_inputs(prompts: list, completions: list, completion_ids: list[list[int]], columns: dict[str, list]
                  ) -> dict[str, Any]:
    """The keyword arguments of one reward-function call (without the hooks): copies of the prompts, completions,
    token ids and dataset columns, so that a function that edits its arguments in place (`ids[:] = ...`,
    `message["content"] = ...`) changes neither the rollouts the trainer trains on nor the log nor the next function's
    arguments."""
    return {
        "prompts": copy.deepcopy(prompts),
        "completions": copy.deepcopy(completions),
        "completion_ids": [list(ids) for ids in completion_ids],
        **copy.deepcopy(columns),
    }


def reward_value(reward: Any) -> float | None:
    """A verifier's reward as a float, or None ("cannot judge") for None and NaN; anything else is an error."""
    if reward is None:
        return None
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) and not hasattr(reward, "item"):
        raise TypeError(f"A verifier returned {reward!r} ({type(reward).__name__}); rewards are floats or None.")
    value = float(reward)
    return None if math.isnan(value) else value


def reward_column(name: str, values: Any, count: int) -> list[float]:
    """One reward function's rewards for `count` completions, NaN where it did not judge, checked against the
    contract (see the module docs): every mistake is an error that names the function."""
    if values is None:
        raise TypeError(f"The reward function {name!r} returned None; return a list with one reward per completion "
                        "(None in it for a completion it does not judge).")
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise TypeError(f"The reward function {name!r} returned a {type(values).__name__}; return a list with one "
                        "reward per completion.")
    if len(values) != count:
        raise ValueError(f"The reward function {name!r} returned {len(values)} rewards for {count} completions (one "
                         "per completion is expected).")
    column = []
    for index, reward in enumerate(values):
        try:
            value = reward_value(reward)
        except TypeError as exc:
            raise TypeError(f"The reward function {name!r} returned {reward!r} ({type(reward).__name__}) for rollout "
                            f"{index}; rewards are numbers, or None for a rollout it does not judge.") from exc
        if value is not None and math.isinf(value):
            raise ValueError(f"The reward function {name!r} returned {value} for rollout {index}; rewards are finite "
                             "numbers, or None / NaN for a rollout it does not judge.")
        column.append(float("nan") if value is None else value)
    return column
