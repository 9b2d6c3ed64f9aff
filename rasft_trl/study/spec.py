"""The study spec: a YAML file that says which methods to compare (recipes plus overrides), on how many seeds, what
to choose on validation, and what to evaluate on.

```yaml
name: rasft-vs-dft                      # title of the report
output_dir: studies/rasft-vs-dft        # cells/ (one JSON per finished run), runs/ (models, evaluations), report
seeds: 3                                # or a list: [0, 1, 2]
train:                                  # how each run is launched: `rasft-trl train` flags
  accelerate_config: zero2              # a file or a shipped config (cpu, ddp, zero2, zero3, fsdp)
  num_processes: 8
  env: {NCCL_DEBUG: WARN}               # optional: environment variables for every train and eval process
methods:                                # name -> recipe (+ script, overrides, selection family)
  dft:
    recipe: Qwen2.5-Math-1.5B/dft/config.yaml
    script: sft                         # rasft (default), sft, srft or grpo
  rasft:
    recipe: Qwen2.5-Math-1.5B/rasft/config_numina.yaml
    family: dft                         # shares dft's chosen value (default: its own name)
    overrides: {window_recalibration_steps: 32}
overrides: {max_steps: 500}             # applied to every method (a method's own overrides win)
selection:                              # optional: choose one recipe field per family on a validation set
  parameter: learning_rate
  grid: [1.0e-6, 2.0e-6, 5.0e-6]
  eval_set: validation
  seed: 0                               # the selection runs' seed
  ties: smaller                         # or larger: which grid value wins a tie
  families:                             # optional: a family's own parameter / grid / ties ([] = no choice)
    rasft: {parameter: window_recalibration_steps, grid: [16, 32], ties: larger}
evaluation:
  args: {temperature: 0, max_new_tokens: 4096}   # `rasft-trl eval` flags for every set
  sets:                                           # name -> its own `rasft-trl eval` flags
    validation: {benchmarks: math500, data_file: "math500=data/validation.jsonl"}
    test: {benchmarks: "math500,minerva,olympiadbench,aime24,aime25,amc23"}
  report: [test]                        # the sets in the report (default: every set but the selection set)
baseline: {model: Qwen/Qwen2.5-Math-1.5B}   # optional: the starting model evaluated as a `base` row
comparisons: [[rasft, dft]]             # paired differences a - b (default: every method against the first)
```

Relative recipe, accelerate-config and data-file paths are read from the spec file's folder when they exist there
(else as given: a shipped recipe's name); a relative `output_dir` is read from where the command runs.

`runner` is `recipe` (the default: each run is `rasft-trl train` then `rasft-trl eval` per set, see
[`~rasft_trl.study.runner`]) or a `module:function` that runs one cell in its own way (the demo study's is
`rasft_trl.demo.study:run_spec_cell`, with `runner_options`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

SCRIPTS = ("rasft", "sft", "srft", "grpo")


class SpecError(ValueError):
    """A problem with a study spec, named in one line."""


@dataclass(frozen=True)
class MethodSpec:
    """One arm of the study.

    Args:
        name: the arm's name in the report.
        recipe: a recipe file or a shipped recipe's name (empty for runners that need none, such as the demo's).
        script: the training script (`rasft-trl train --method`): rasft (the default), sft, srft or grpo; for the
            demo runner, the demo method (`rasft_trl.demo.run.METHODS`; default: the arm's name).
        overrides: recipe fields set for this arm (`--key value` flags of the script).
        family: the arms that share one selected value; the family's selector chooses it.
    """

    name: str
    recipe: str = ""
    script: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    family: str = ""


@dataclass(frozen=True)
class StudySpec:
    """A parsed study spec (see the module docstring for the YAML form)."""

    name: str
    output_dir: str
    methods: dict[str, MethodSpec]
    seeds: tuple[int, ...] = (0, 1, 2)
    train: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    selection_parameter: str = "learning_rate"
    selection_grid: tuple[Any, ...] = ()
    selection_set: str = ""
    selection_seed: int = 0
    selectors: dict[str, str] = field(default_factory=dict)
    selection_ties: str = "smaller"
    family_selection: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_args: dict[str, Any] = field(default_factory=dict)
    eval_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_sets: tuple[str, ...] = ()
    baseline_model: str | None = None
    comparisons: tuple[tuple[str, str], ...] = ()
    runner: str = "recipe"
    runner_options: dict[str, Any] = field(default_factory=dict)
    base_dir: str = "."

    @property
    def families(self) -> dict[str, list[str]]:
        """family -> its arms, in spec order."""
        out: dict[str, list[str]] = {}
        for method in self.methods.values():
            out.setdefault(method.family, []).append(method.name)
        return out

    def selector(self, family: str) -> str:
        """The arm that chooses the family's value (`selectors`, else the family's first arm)."""
        return self.selectors.get(family, self.families[family][0])

    def selection_of(self, family: str) -> tuple[str, tuple[Any, ...], str]:
        """`(parameter, grid, ties)` chosen for `family`: its own `selection.families` entry, else the spec's."""
        own = self.family_selection.get(family, {})
        return (str(own.get("parameter", self.selection_parameter)), tuple(own.get("grid", self.selection_grid)),
                str(own.get("ties", self.selection_ties)))

    @property
    def selects(self) -> bool:
        """Whether any family has a grid to choose from."""
        return any(self.selection_of(family)[1] for family in self.families)

    def path(self, value: str) -> str:
        """`value` read from the spec's folder when it is a relative path that exists there."""
        candidate = os.path.join(self.base_dir, value)
        return candidate if not os.path.isabs(value) and os.path.exists(candidate) else value


ALLOWED = {"name", "output_dir", "seeds", "train", "methods", "overrides", "selection", "evaluation", "baseline",
           "comparisons", "runner", "runner_options"}


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be a mapping, got {type(value).__name__}.")
    return dict(value)


def _unknown(keys, allowed, where: str) -> None:
    import difflib

    for key in keys:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SpecError(f"unknown key {key!r} in {where}{hint}; known: {sorted(allowed)}.")


def parse_spec(raw: dict[str, Any], base_dir: str = ".", default_name: str = "study") -> StudySpec:
    """A [`StudySpec`] from the YAML mapping; every mistake is a [`SpecError`] naming the key."""
    raw = _mapping(raw, "the spec")
    _unknown(raw, ALLOWED, "the spec")
    methods_raw = _mapping(raw.get("methods"), "methods")
    if not methods_raw:
        raise SpecError("methods: name at least one method (name -> {recipe: ..., script: ...}).")
    runner = str(raw.get("runner", "recipe"))
    methods = {}
    for name, body in methods_raw.items():
        body = _mapping(body, f"methods.{name}")
        _unknown(body, {"recipe", "script", "overrides", "family"}, f"methods.{name}")
        script = str(body.get("script", "rasft" if runner == "recipe" else ""))  # other runners: their default
        if runner == "recipe" and script not in SCRIPTS:
            raise SpecError(f"methods.{name}.script: {script!r} is not one of {list(SCRIPTS)}.")
        if runner == "recipe" and not body.get("recipe"):
            raise SpecError(f"methods.{name}: a recipe is required (a YAML file or a shipped recipe's name).")
        if "/" in str(name) or str(name) == "base":
            raise SpecError(f"methods: {name!r} cannot name a method ('base' is the baseline row; no '/').")
        methods[str(name)] = MethodSpec(str(name), str(body.get("recipe", "")), script,
                                        _mapping(body.get("overrides"), f"methods.{name}.overrides"),
                                        str(body.get("family", name)))
    seeds = raw.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SpecError("seeds must be >= 1 (or a list of seeds).")
        seeds = tuple(range(seeds))
    elif isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds):
        if len(set(seeds)) != len(seeds):
            raise SpecError(f"seeds: {seeds} repeats a seed.")
        seeds = tuple(seeds)
    else:
        raise SpecError(f"seeds must be a positive count or a list of integers, got {seeds!r}.")
    evaluation = _mapping(raw.get("evaluation"), "evaluation")
    _unknown(evaluation, {"args", "sets", "report"}, "evaluation")
    sets = {str(k): _mapping(v, f"evaluation.sets.{k}") for k, v in _mapping(evaluation.get("sets"),
                                                                               "evaluation.sets").items()}
    if not sets:
        raise SpecError("evaluation.sets: name at least one evaluation set (name -> rasft-trl eval flags).")
    selection = _mapping(raw.get("selection"), "selection")
    _unknown(selection, {"parameter", "grid", "eval_set", "seed", "selectors", "ties", "families"}, "selection")
    grid = tuple(selection.get("grid") or ())
    family_selection = {}
    for family, body in _mapping(selection.get("families"), "selection.families").items():
        body = _mapping(body, f"selection.families.{family}")
        _unknown(body, {"parameter", "grid", "ties"}, f"selection.families.{family}")
        if body.get("ties", "smaller") not in ("smaller", "larger"):
            raise SpecError(f"selection.families.{family}.ties must be 'smaller' or 'larger'.")
        family_selection[str(family)] = body
    if selection.get("ties", "smaller") not in ("smaller", "larger"):
        raise SpecError("selection.ties must be 'smaller' or 'larger'.")
    any_grid = bool(grid) or any(b.get("grid") for b in family_selection.values())
    selection_set = str(selection.get("eval_set", "validation" if any_grid else ""))
    if any_grid and selection_set not in sets:
        raise SpecError(f"selection.eval_set: {selection_set!r} is not an evaluation set ({sorted(sets)}).")
    if len(set(map(repr, grid))) != len(grid):
        raise SpecError(f"selection.grid {list(grid)} repeats a value.")
    report_sets = tuple(evaluation.get("report") or [s for s in sets if s != selection_set])
    for s in report_sets:
        if s not in sets:
            raise SpecError(f"evaluation.report: {s!r} is not an evaluation set ({sorted(sets)}).")
    if not report_sets:
        raise SpecError("evaluation: no set left to report (the only set is the selection set).")
    comparisons = []
    for pair in raw.get("comparisons") or [[m, next(iter(methods))] for m in list(methods)[1:]]:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise SpecError(f"comparisons: each entry is [a, b] (reported as a - b), got {pair!r}.")
        for m in pair:
            if m not in methods and m != "base":
                raise SpecError(f"comparisons: {m!r} is not a method ({sorted(methods)}).")
        comparisons.append((str(pair[0]), str(pair[1])))
    baseline = _mapping(raw.get("baseline"), "baseline")
    _unknown(baseline, {"model"}, "baseline")
    spec = StudySpec(
        name=str(raw.get("name", default_name)),
        output_dir=str(raw.get("output_dir", os.path.join(base_dir, "study_output"))),
        methods=methods, seeds=seeds, train=_mapping(raw.get("train"), "train"),
        overrides=_mapping(raw.get("overrides"), "overrides"),
        selection_parameter=str(selection.get("parameter", "learning_rate")), selection_grid=grid,
        selection_set=selection_set if any_grid else "", selection_seed=int(selection.get("seed", seeds[0])),
        selectors={str(k): str(v) for k, v in _mapping(selection.get("selectors"), "selection.selectors").items()},
        selection_ties=str(selection.get("ties", "smaller")), family_selection=family_selection,
        eval_args=_mapping(evaluation.get("args"), "evaluation.args"), eval_sets=sets, report_sets=report_sets,
        baseline_model=baseline.get("model"), comparisons=tuple(comparisons), runner=runner,
        runner_options=_mapping(raw.get("runner_options"), "runner_options"), base_dir=base_dir,
    )
    for family in family_selection:
        if family not in spec.families:
            raise SpecError(f"selection.families: {family!r} is not a family ({sorted(spec.families)}).")
    for family, selector in spec.selectors.items():
        if family not in spec.families or selector not in spec.families[family]:
            raise SpecError(f"selection.selectors: {selector!r} does not belong to the family {family!r}.")
    if "base" in [m for pair in comparisons for m in pair] and not spec.baseline_model and runner == "recipe":
        raise SpecError("comparisons name 'base' but the spec has no baseline model.")
    return spec


def load_spec(path: str, output_dir: str | None = None) -> StudySpec:
    """Read a study spec from YAML (a file, or a shipped spec's name under `recipes/studies/`)."""
    import yaml

    from ..shipped import STUDIES

    if not os.path.isfile(path):
        shipped = STUDIES / (path if path.endswith(".yaml") else f"{path}.yaml")
        if not shipped.is_file():
            raise SpecError(f"study spec {path!r} is neither a file nor a shipped spec "
                            f"({sorted(p.stem for p in STUDIES.glob('*.yaml'))}).")
        path = str(shipped)
    with open(path) as handle:
        try:
            raw = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            raise SpecError(f"{path} is not valid YAML: {exc}") from exc
    base_dir = os.path.dirname(os.path.abspath(path))
    name = os.path.splitext(os.path.basename(path))[0]
    raw = dict(raw) if isinstance(raw, dict) else raw
    if isinstance(raw, dict) and output_dir:
        raw["output_dir"] = output_dir
    elif isinstance(raw, dict) and raw.get("output_dir") and not os.path.isabs(raw["output_dir"]):
        raw["output_dir"] = os.path.join(os.getcwd(), raw["output_dir"])  # relative to where the command runs
    return parse_spec(raw, base_dir=base_dir, default_name=name)
