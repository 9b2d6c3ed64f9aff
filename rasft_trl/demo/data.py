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
    return "\n".join(steps + [f"The answer is \\boxed{{{answer}}}."])


# ---- level 1: one step, small numbers -------------------------------------------------------------


def _add(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 60), rng.randint(2, 39)
    c = a + b
    return Problem(f"What is {a} + {b}?", _boxed([f"We add the two numbers: {a} + {b} = {c}."], c), c, 1, "add")


def _sub(rng: random.Random) -> Problem:
    a = rng.randint(20, 99)
    b = rng.randint(2, a - 1)
    c = a - b
    return Problem(f"What is {a} - {b}?", _boxed([f"We subtract: {a} - {b} = {c}."], c), c, 1, "sub")


def _word_add(rng: random.Random) -> Problem:
    (name, pron), item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(3, 50), rng.randint(2, 30)
    c = a + b
    question = f"{name} has {a} {item}. {pron.capitalize()} gets {b} more. How many {item} does {name} have now?"
    steps = [f"{name} starts with {a} {item} and gets {b} more, so {name} has {a} + {b} = {c} {item}."]
    return Problem(question, _boxed(steps, c), c, 1, "word_add")


def _word_sub(rng: random.Random) -> Problem:
    (name, pron), item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a = rng.randint(10, 60)
    b = rng.randint(2, a - 2)
    c = a - b
    question = f"{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?"
    steps = [f"{name} had {a} {item} and gave away {b}, so {pron} has {a} - {b} = {c} {item} left."]
    return Problem(question, _boxed(steps, c), c, 1, "word_sub")


# ---- level 2: multiplication or two steps ---------------------------------------------------------


def _mul(rng: random.Random) -> Problem:
    a, b = rng.randint(3, 15), rng.randint(3, 12)
    c = a * b
    return Problem(f"What is {a} * {b}?", _boxed([f"We multiply: {a} * {b} = {c}."], c), c, 2, "mul")


def _mul_add(rng: random.Random) -> Problem:
    a, b, d = rng.randint(3, 12), rng.randint(3, 12), rng.randint(2, 40)
    p = a * b
    c = p + d
    steps = [f"First we multiply: {a} * {b} = {p}.", f"Then we add: {p} + {d} = {c}."]
    return Problem(f"What is {a} * {b} + {d}?", _boxed(steps, c), c, 2, "mul_add")


def _word_mul(rng: random.Random) -> Problem:
    item = rng.choice(_ITEMS)
    a, b = rng.randint(3, 15), rng.randint(3, 12)
    c = a * b
    question = f"A box holds {a} {item}. How many {item} are in {b} boxes?"
    steps = [f"Each box holds {a} {item}, so {b} boxes hold {a} * {b} = {c} {item}."]
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
        f"{name} buys {a} packs of {b}, which is {a} * {b} = {p} {item}.",
        f"After giving away {d}, {pron} has {p} - {d} = {c} {item}.",
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
        f"In {d} days the shop sells {b} * {d} = {sold} {item}.",
        f"After that it has {a} - {sold} = {left} {item}.",
        f"After the delivery it has {left} + {e} = {c} {item}.",
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
        f"Each day {name} earns {rate} * {hours} = {daily} dollars.",
        f"In {days} days {pron} earns {daily} * {days} = {total} dollars.",
        f"After spending {spent} dollars, {pron} has {total} - {spent} = {c} dollars left.",
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
        f"The orchard has {rows} * {per_row} = {trees} trees.",
        f"After cutting down {cut}, it has {trees} - {cut} = {left} trees.",
        f"After planting {planted}, it has {left} + {planted} = {c} trees.",
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
        f"The school has {classes} * {size} = {total} students.",
        f"Split into {groups} equal teams, each team has {total} / {groups} = {per_group} students.",
    ]
    return Problem(question, _boxed(steps, per_group), per_group, 3, "groups")


TEMPLATES: dict[int, tuple[Callable[[random.Random], Problem], ...]] = {
    1: (_add, _sub, _word_add, _word_sub),
    2: (_mul, _mul_add, _word_mul, _word_mul_sub),
    3: (_shop, _wages, _orchard, _groups),
}


def generate_problem(rng: random.Random, level: int) -> Problem:
    """Draw one problem of the given level from a uniformly chosen template.

    Args:
        rng: the random generator (its state advances).
        level: 1, 2 or 3.
    """
    if level not in TEMPLATES:
        raise ValueError(f"level must be one of {sorted(TEMPLATES)}, got {level!r}.")
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
    num_train: int, num_eval: int, seed: int = 42, levels: tuple[int, ...] = LEVELS
) -> dict[str, list[dict]]:
    """Build disjoint train and held-out evaluation splits as lists of rows.

    The evaluation split is drawn first from its own random stream, so it does not depend on
    `num_train`; the training split excludes every evaluation question.

    Args:
        num_train: number of training problems.
        num_eval: number of held-out problems.
        seed: base seed.
        levels: difficulty levels to include (balanced round-robin).

    Returns:
        `{"train": [...], "eval": [...]}`.
    """
    eval_problems = sample_problems(num_eval, f"{seed}-eval", levels)
    exclude = frozenset(p.question for p in eval_problems)
    train_problems = sample_problems(num_train, f"{seed}-train", levels, exclude=exclude)
    return {"train": [to_row(p) for p in train_problems], "eval": [to_row(p) for p in eval_problems]}


def build_datasets(num_train: int, num_eval: int, seed: int = 42, levels: tuple[int, ...] = LEVELS) -> DatasetDict:
    """[`build_splits`] as a `datasets.DatasetDict` with splits `train` and `eval`."""
    from datasets import Dataset, DatasetDict

    splits = build_splits(num_train, num_eval, seed=seed, levels=levels)
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})
