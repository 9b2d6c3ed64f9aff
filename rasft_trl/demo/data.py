"""Grade-school math problems with verifiable integer answers and expert demonstrations.

A tiny, self-contained stand-in for NuminaMath-CoT: problems are generated on the fly from templates
with a fixed seed, so the demo needs no download. Three difficulty levels:

- level 1: one step, addition or subtraction of numbers below 100 (bare or as a short word problem);
- level 2: a multiplication, or two steps (multiply then add / subtract);
- level 3: word problems with three or four steps and numbers in the hundreds or thousands.

Each problem comes with an expert chain of thought (one line per step) that ends in `\\boxed{answer}`.
The rows have the columns RASFT expects: `prompt` (conversational), `completion` (the expert
demonstration), `answer` (the integer as a string, read by the math verifier) and `level`.

Pure python: no torch. [`build_datasets`] imports `datasets` lazily.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from datasets import DatasetDict

#: instruction appended to every question (the reference implementation's system line)
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
LEVELS = (1, 2, 3)
#: problems reserved per held-out split: the first `n` of a split are the same for every `n` up to this, and no
#: training split ever draws one of them
HELD_OUT_RESERVE = {"eval": 1024, "ood": 512, "validation": 512}
#: the level of the out-of-distribution family ([`OOD_TEMPLATES`]); never drawn for training
OOD_LEVEL = 0

_NAMES = [
    ("Tom", "he"),
    ("Mia", "she"),
    ("Ben", "he"),
    ("Ava", "she"),
    ("Sam", "he"),
    ("Lily", "she"),
    ("Leo", "he"),
    ("Emma", "she"),
    ("Noah", "he"),
    ("Zoe", "she"),
    ("Omar", "he"),
    ("Nina", "she"),
]
_ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "cards", "shells", "stamps", "toy cars"]


@dataclass(frozen=True)
class Problem:
    """One generated problem.

    Args:
        question: the problem statement shown to the model (without the instruction).
        solution: the expert chain of thought, ending in `\\boxed{answer}`.
        answer: the integer answer.
        level: difficulty level (1, 2 or 3).
        template: name of the template that produced it.
    """

    question: str
    solution: str
    answer: int
    level: int
    template: str


def _boxed(steps: list[str], answer: int) -> str:
    """A compact worked solution: one equation per line, then the boxed answer (short enough that a rollout
    budget of 64 tokens finishes every level)."""
    return "\n".join(steps + [f"The answer is \\boxed{{{answer}}}."])


# ---- level 1: one step, small numbers -------------------------------------------------------------


def _add(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 60), rng.randint(2, 39)
    c = a + b
    return Problem(f"What is {a} + {b}?", _boxed([f"{a} + {b} = {c}"], c), c, 1, "add")


def _sub(rng: random.Random) -> Problem:
    a = rng.randint(20, 99)
    b = rng.randint(2, a - 1)
    c = a - b
    return Problem(f"What is {a} - {b}?", _boxed([f"{a} - {b} = {c}"], c), c, 1, "sub")


def _word_add(rng: random.Random) -> Problem:
    (name, pron), item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(3, 50), rng.randint(2, 30)
    c = a + b
    question = f"{name} has {a} {item}. {pron.capitalize()} gets {b} more. How many {item} does {name} have now?"
    steps = [f"{a} + {b} = {c}"]
    return Problem(question, _boxed(steps, c), c, 1, "word_add")


def _word_sub(rng: random.Random) -> Problem:
    (name, _), item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a = rng.randint(10, 60)
    b = rng.randint(2, a - 2)
    c = a - b
    question = f"{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?"
    steps = [f"{a} - {b} = {c}"]
    return Problem(question, _boxed(steps, c), c, 1, "word_sub")


# ---- level 2: multiplication or two steps ---------------------------------------------------------


def _mul(rng: random.Random) -> Problem:
    a, b = rng.randint(3, 15), rng.randint(3, 12)
    c = a * b
    return Problem(f"What is {a} * {b}?", _boxed([f"{a} * {b} = {c}"], c), c, 2, "mul")


def _mul_add(rng: random.Random) -> Problem:
    a, b, d = rng.randint(3, 12), rng.randint(3, 12), rng.randint(2, 40)
    p = a * b
    c = p + d
    steps = [f"{a} * {b} = {p}", f"{p} + {d} = {c}"]
    return Problem(f"What is {a} * {b} + {d}?", _boxed(steps, c), c, 2, "mul_add")


def _word_mul(rng: random.Random) -> Problem:
    item = rng.choice(_ITEMS)
    a, b = rng.randint(3, 15), rng.randint(3, 12)
    c = a * b
    question = f"A box holds {a} {item}. How many {item} are in {b} boxes?"
    steps = [f"{a} * {b} = {c}"]
    return Problem(question, _boxed(steps, c), c, 2, "word_mul")


def _word_mul_sub(rng: random.Random) -> Problem:
    (name, pron), item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(3, 9), rng.randint(4, 12)
    p = a * b
    d = rng.randint(2, p - 2)
    c = p - d
    question = (
        f"{name} buys {a} packs of {item} with {b} {item} in each pack. Then {pron} gives away {d} {item}. "
        f"How many {item} does {name} have now?"
    )
    steps = [
        f"{a} * {b} = {p}",
        f"{p} - {d} = {c}",
    ]
    return Problem(question, _boxed(steps, c), c, 2, "word_mul_sub")


# ---- level 3: multi-step word problems, larger numbers ------------------------------------------


def _shop(rng: random.Random) -> Problem:
    item = rng.choice(_ITEMS)
    b, d = rng.randint(12, 45), rng.randint(3, 7)
    sold = b * d
    a = sold + rng.randint(20, 300)
    e = rng.randint(50, 400)
    left = a - sold
    c = left + e
    question = (
        f"A shop has {a} {item}. It sells {b} {item} every day for {d} days, and then it receives a delivery "
        f"of {e} {item}. How many {item} does the shop have now?"
    )
    steps = [
        f"{b} * {d} = {sold}",
        f"{a} - {sold} = {left}",
        f"{left} + {e} = {c}",
    ]
    return Problem(question, _boxed(steps, c), c, 3, "shop")


def _wages(rng: random.Random) -> Problem:
    name, pron = rng.choice(_NAMES)
    rate, hours, days = rng.randint(8, 25), rng.randint(3, 8), rng.randint(4, 12)
    daily = rate * hours
    total = daily * days
    spent = rng.randint(20, total - 10)
    c = total - spent
    question = (
        f"{name} earns {rate} dollars per hour and works {hours} hours a day for {days} days. "
        f"Then {pron} spends {spent} dollars. How many dollars does {name} have left?"
    )
    steps = [
        f"{rate} * {hours} = {daily}",
        f"{daily} * {days} = {total}",
        f"{total} - {spent} = {c}",
    ]
    return Problem(question, _boxed(steps, c), c, 3, "wages")


def _orchard(rng: random.Random) -> Problem:
    rows, per_row = rng.randint(12, 40), rng.randint(11, 30)
    trees = rows * per_row
    cut = rng.randint(10, trees // 3)
    planted = rng.randint(15, 250)
    left = trees - cut
    c = left + planted
    question = (
        f"An orchard has {rows} rows of trees with {per_row} trees in each row. The farmer cuts down {cut} trees "
        f"and plants {planted} new ones. How many trees are in the orchard now?"
    )
    steps = [
        f"{rows} * {per_row} = {trees}",
        f"{trees} - {cut} = {left}",
        f"{left} + {planted} = {c}",
    ]
    return Problem(question, _boxed(steps, c), c, 3, "orchard")


def _groups(rng: random.Random) -> Problem:
    groups = rng.randint(3, 9)
    per_group = rng.randint(6, 30)
    total = groups * per_group
    # classes * size == total, so that the division is exact; k == groups always qualifies
    divisors = [k for k in range(2, total // 5 + 1) if total % k == 0 and total // k >= 5]
    classes = rng.choice(divisors)
    size = total // classes
    question = (
        f"A school has {classes} classes with {size} students in each class. All the students are split "
        f"equally into {groups} teams. How many students are in each team?"
    )
    steps = [
        f"{classes} * {size} = {total}",
        f"{total} / {groups} = {per_group}",
    ]
    return Problem(question, _boxed(steps, per_group), per_group, 3, "groups")


# ---- out of distribution: two-step problems in templates that no training split ever uses -----------------


def _ages(rng: random.Random) -> Problem:
    name, pron = rng.choice(_NAMES)
    age, gap, years = rng.randint(4, 40), rng.randint(2, 30), rng.randint(2, 25)
    sibling = age + gap
    c = sibling + years
    question = (
        f"{name} is {age} years old. {'His' if pron == 'he' else 'Her'} cousin is {gap} years older. "
        f"How old will the cousin be in {years} years?"
    )
    return Problem(question, _boxed([f"{age} + {gap} = {sibling}", f"{sibling} + {years} = {c}"], c), c, 0, "ages")


def _trip(rng: random.Random) -> Problem:
    speed, hours, extra = rng.randint(20, 90), rng.randint(2, 6), rng.randint(5, 60)
    part = speed * hours
    c = part + extra
    question = f"A bus travels {speed} km every hour for {hours} hours, then {extra} km more. How many km is the trip?"
    return Problem(question, _boxed([f"{speed} * {hours} = {part}", f"{part} + {extra} = {c}"], c), c, 0, "trip")


def _change(rng: random.Random) -> Problem:
    name, pron = rng.choice(_NAMES)
    count, price = rng.randint(2, 9), rng.randint(3, 15)
    cost = count * price
    paid = rng.choice([b for b in (50, 100, 200) if b > cost])
    c = paid - cost
    question = (
        f"{name} buys {count} notebooks at {price} dollars each and pays with {paid} dollars. "
        f"How much change does {pron} get?"
    )
    return Problem(question, _boxed([f"{count} * {price} = {cost}", f"{paid} - {cost} = {c}"], c), c, 0, "change")


def _together(rng: random.Random) -> Problem:
    (name, _), (other, _) = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    a, times = rng.randint(3, 25), rng.randint(2, 6)
    b = a * times
    c = a + b
    question = f"{name} has {a} {item} and {other} has {times} times as many. How many {item} do they have together?"
    return Problem(question, _boxed([f"{a} * {times} = {b}", f"{a} + {b} = {c}"], c), c, 0, "together")


#: the out-of-distribution family (level 0): skills of levels 1-2 in phrasings the training data never shows
OOD_TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (_ages, _trip, _change, _together)

TEMPLATES: dict[int, tuple[Callable[[random.Random], Problem], ...]] = {
    1: (_add, _sub, _word_add, _word_sub),
    2: (_mul, _mul_add, _word_mul, _word_mul_sub),
    3: (_shop, _wages, _orchard, _groups),
}


def generate_problem(rng: random.Random, level: int) -> Problem:
    """Draw one problem of the given level from a uniformly chosen template.

    Args:
        rng: the random generator (its state advances).
        level: 1, 2 or 3, or `OOD_LEVEL` (0) for the out-of-distribution family.
    """
    if level == OOD_LEVEL:
        return rng.choice(OOD_TEMPLATES)(rng)
    if level not in TEMPLATES:
        raise ValueError(f"level must be one of {sorted(TEMPLATES)} or {OOD_LEVEL} (out of distribution), got {level!r}.")
    return rng.choice(TEMPLATES[level])(rng)


def sample_problems(
    n: int, seed: int | str, levels: tuple[int, ...] = LEVELS, exclude: frozenset[str] = frozenset()
) -> list[Problem]:
    """Draw `n` distinct problems, cycling through `levels` so that every level is equally represented.

    Args:
        n: number of problems.
        seed: seed of the private random generator (the result depends only on the arguments).
        levels: difficulty levels to cycle through.
        exclude: questions that must not be drawn (e.g. the other split's).

    Raises:
        RuntimeError: if `n` distinct problems cannot be found (the template space is exhausted).
    """
    rng = random.Random(seed)
    seen, problems = set(exclude), []
    max_attempts = 100 * n + 1000
    for _ in range(max_attempts):
        if len(problems) == n:
            break
        problem = generate_problem(rng, levels[len(problems) % len(levels)])
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    if len(problems) < n:
        raise RuntimeError(
            f"Found only {len(problems)} distinct problems of levels {levels} after {max_attempts} draws."
        )
    return problems


def to_row(problem: Problem) -> dict:
    """The dataset row of a problem: conversational `prompt`, `completion`, `answer` (string), `level`."""
    return {
        "prompt": [{"role": "user", "content": f"{problem.question}\n{INSTRUCTION}"}],
        "completion": problem.solution,
        "answer": str(problem.answer),
        "level": problem.level,
    }


def build_splits(
    num_train: int,
    num_eval: int,
    seed: int = 42,
    levels: tuple[int, ...] = LEVELS,
    num_warmup: int = 0,
    num_validation: int = 0,
    num_ood: int = 0,
) -> dict[str, list[dict]]:
    """Build disjoint splits as lists of rows.

    Each split has its own random stream and excludes the questions of the splits drawn before it, in this order
    (held-out splits count with at least their [`HELD_OUT_RESERVE`] size, whatever size is asked for):
    `eval` (held-out test problems; it depends only on `seed`, `num_eval` and `levels`), `ood` (the
    out-of-distribution family, level 0), `validation` (for choosing hyperparameters), `warmup` (the SFT warm
    start's data), `train`.

    Args:
        num_train: number of training problems.
        num_eval: number of held-out problems.
        seed: base seed.
        levels: difficulty levels to include (balanced round-robin).
        num_warmup, num_validation, num_ood: sizes of the optional splits (a split of size 0 is left out).

    Returns:
        `{"train": [...], "eval": [...]}` plus `"warmup"`, `"validation"` and `"ood"` when asked for.
    """
    sizes = {"eval": (num_eval, levels), "ood": (num_ood, (OOD_LEVEL,)), "validation": (num_validation, levels),
             "warmup": (num_warmup, levels), "train": (num_train, levels)}
    splits: dict[str, list[dict]] = {}
    drawn: set[str] = set()
    for name, (size, split_levels) in sizes.items():
        # held-out splits are drawn at their reserved size and cut: what later splits exclude never depends on the
        # sizes asked for, so the warm start's split stays disjoint from every test set a study uses
        problems = sample_problems(max(size, HELD_OUT_RESERVE.get(name, 0)), f"{seed}-{name}", split_levels,
                                   exclude=frozenset(drawn))
        drawn.update(p.question for p in problems)
        if size or name in ("train", "eval"):
            splits[name] = [to_row(p) for p in problems[:size]]
    return splits


def build_datasets(num_train: int, num_eval: int, seed: int = 42, levels: tuple[int, ...] = LEVELS) -> DatasetDict:
    """[`build_splits`] as a `datasets.DatasetDict` with splits `train` and `eval`."""
    from datasets import Dataset, DatasetDict

    splits = build_splits(num_train, num_eval, seed=seed, levels=levels)
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})
