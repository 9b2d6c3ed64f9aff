"""Route the rows of a mixed dataset (math + code + ...) to a verifier per task.

A row's `task` column (configurable) names its route. A route is a registered verifier name
(`"math"`, `"code"`, or anything added with [`register_verifier`]), a [`Verifier`], or any callable in
TRL's reward-function form `(prompts, completions, completion_ids=None, **columns) -> list[float | None]`.
Each route is called once per batch with only its rows, and receives all of their columns, so every
route finds its own reference column (`answer` for math, `tests` for code, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .base import Verdict, Verifier, VerifyResult
from .registry import get_verifier

__all__ = ["RoutedVerifier"]


class RoutedVerifier(Verifier):
    """Dispatches each row to the verifier named by its task column; itself a TRL reward function.

    Example:
        ```python
        from rasft_trl.verifiers import RoutedVerifier

        reward = RoutedVerifier({"math": "math", "code": "code"})
        reward(prompts, completions, task=["math", "code"], answer=["4", None], tests=[None, "assert f() == 1"])
        ```

    Args:
        routes: task value -> registered verifier name, [`Verifier`] instance or reward-function callable.
        column: the dataset column holding each row's task.
        default: route for task values not in `routes` (same kinds as a route); `None` makes an unknown
            task a `ValueError` naming the row and the value.
        correct_threshold: in `verify_batch`, a plain reward function's reward counts as correct when it
            is at least this (verifiers give 1.0 / 0.0 / None; other reward functions may grade).

    Raises:
        ValueError: on an empty `routes`, or a name that is not registered.
    """

    __name__ = "routed_verifier"

    def __init__(
        self,
        routes: Mapping[str, Verifier | Callable | str],
        column: str = "task",
        default: Verifier | Callable | str | None = None,
        correct_threshold: float = 1.0,
    ):
        if not routes:
            raise ValueError("RoutedVerifier needs at least one route.")
        self.column = column
        self.routes: dict[Any, Callable] = {task: self._resolve(task, route) for task, route in routes.items()}
        self.default = self._resolve("default", default) if default is not None else None
        self.correct_threshold = float(correct_threshold)

    @staticmethod
    def _resolve(task: Any, route: Verifier | Callable | str) -> Callable:
        if isinstance(route, str):
            return get_verifier(route)
        if not callable(route):
            raise TypeError(f"The route for task {task!r} must be a verifier name or a callable, got {route!r:.80}.")
        return route

    @property
    def stats(self) -> dict[str, dict]:
        """The `stats` of every route that keeps counters, by task."""
        routes = {**self.routes, **({"default": self.default} if self.default is not None else {})}
        return {
            task: dict(route.stats)
            for task, route in routes.items()
            if isinstance(getattr(route, "stats", None), dict)
        }

    def _groups(self, tasks: list[Any]) -> dict[Any, list[int]]:
        """Row indices per route key (the task, or `None` for the default route); validates every row first."""
        groups: dict[Any, list[int]] = {}
        for i, task in enumerate(tasks):
            try:
                known = task in self.routes
            except TypeError:  # unhashable value: cannot be a route
                known = False
            if known:
                groups.setdefault(task, []).append(i)
            elif self.default is not None:
                groups.setdefault(_DEFAULT, []).append(i)
            else:
                raise ValueError(
                    f"RoutedVerifier: row {i} has {self.column}={task!r}, which has no route "
                    f"(routes: {', '.join(sorted(map(repr, self.routes)))}); add a route or pass default=."
                )
        return groups

    def _route(self, key: Any) -> Callable:
        return self.default if key is _DEFAULT else self.routes[key]

    # ------------------------------------------------------------------ reward-function form

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns: Any) -> list[float | None]:
        if completions is None:
            raise ValueError("A verifier needs `completions`.")
        if self.column not in columns:
            raise ValueError(
                f"RoutedVerifier needs the dataset column {self.column!r}; got columns {sorted(columns)}."
            )
        n = len(completions)
        tasks = list(columns[self.column])
        if len(tasks) != n:
            raise ValueError(f"Column {self.column!r} has {len(tasks)} values for {n} completions.")
        rewards: list[float | None] = [None] * n
        for key, idx in self._groups(tasks).items():
            sub_columns = {k: _take(v, idx, n) for k, v in columns.items()}
            out = self._route(key)(
                prompts=_take(prompts, idx, n),
                completions=[completions[i] for i in idx],
                completion_ids=_take(completion_ids, idx, n),
                **sub_columns,
            )
            out = list(out)
            if len(out) != len(idx):
                raise ValueError(f"The route for task {key!r} returned {len(out)} rewards for {len(idx)} completions.")
            for i, reward in zip(idx, out):
                rewards[i] = reward
        return rewards

    # ------------------------------------------------------------------ verifier form

    def verify_batch(
        self, predictions: list[str], references: list[Any] | None = None, rows: list[dict] | None = None
    ) -> list[VerifyResult]:
        """Verify `predictions` routed by `rows[i][column]`.

        A [`Verifier`] route gets its references from its own `reference_column` in the rows (falling
        back to `references[i]`); a plain reward function gets the rows' columns and its reward is
        turned into a [`VerifyResult`] (`reason="reward_function"`, the reward in `details`).

        Args:
            predictions: response texts.
            references: optional references, used where a row lacks the route's reference column.
            rows: all dataset columns per prediction, including the task column. Required.
        """
        n = len(predictions)
        if rows is None or len(rows) != n:
            raise ValueError(f"RoutedVerifier.verify_batch needs one row per prediction (column {self.column!r}).")
        if references is not None and len(references) != n:
            raise ValueError(f"Got {n} predictions and {len(references)} references.")
        missing = [i for i, row in enumerate(rows) if self.column not in row]
        if missing:
            raise ValueError(f"RoutedVerifier: row {missing[0]} has no {self.column!r} column.")
        results: list[VerifyResult | None] = [None] * n
        for key, idx in self._groups([row[self.column] for row in rows]).items():
            route = self._route(key)
            sub_rows = [rows[i] for i in idx]
            sub_preds = [predictions[i] for i in idx]
            if isinstance(route, Verifier):
                refs = [
                    row.get(route.reference_column, references[i] if references is not None else None)
                    for i, row in zip(idx, sub_rows)
                ]
                out = route.verify_batch(sub_preds, refs, rows=sub_rows)
            else:
                columns = {k: [row.get(k) for row in sub_rows] for k in {k for row in sub_rows for k in row}}
                prompts = columns.pop("prompt", None)
                columns.pop("completion", None)
                out = [self._as_result(r) for r in route(prompts=prompts, completions=sub_preds, **columns)]
            if len(out) != len(idx):
                raise ValueError(f"The route for task {key!r} returned {len(out)} results for {len(idx)} predictions.")
            for i, result in zip(idx, out):
                results[i] = result
        return results

    def _as_result(self, reward: float | None) -> VerifyResult:
        if reward is None:
            return VerifyResult(Verdict.CANNOT_JUDGE, "reward_function", details={"reward": None})
        verdict = Verdict.CORRECT if float(reward) >= self.correct_threshold else Verdict.INCORRECT
        return VerifyResult(verdict, "reward_function", details={"reward": float(reward)})


class _DefaultKey:
    def __repr__(self) -> str:
        return "<default>"


_DEFAULT = _DefaultKey()


def _take(values: Any, idx: list[int], n: int) -> Any:
    """`values` restricted to rows `idx` when it is a per-row list; anything else is passed unchanged."""
    if isinstance(values, list) and len(values) == n:
        return [values[i] for i in idx]
    return values
