"""Seeded GSM8K-style word problems for the offline demo task.

Real GSM8K is beyond the embedded 135M model (0-2% accuracy before and after a short fine-tune), so
utility could not separate the methods. These problems keep GSM8K's *format* — a question, a
step-by-step solution that restates the quantities in its first words, and ``#### N`` — with 1, 2
or 3 arithmetic steps on small numbers. The answer style matters for the study: the opening tokens
of a task's answers are what pull a fine-tuned model away from its refusals.

Every solution is checked by recomputing each ``a op b = c`` it contains and the final answer; a
template bug raises instead of shipping a wrong label.

Train and test never share a question: each question text is assigned to one split by a hash of the
text (see :func:`split_of`), and ``generate_problems(split=...)`` only keeps questions of its split,
whatever the seeds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from ..errors import UserError
from .answers import final_number
from .splits import SPLITS, TEST_FRACTION, distinct_of_split, hash_split  # noqa: F401 - re-exported

Problem = dict[str, str]

# (name, subject pronoun, possessive pronoun)
NAMES = [
    ("Tom", "he", "his"), ("Anna", "she", "her"), ("Liam", "he", "his"), ("Maya", "she", "her"),
    ("Omar", "he", "his"), ("Sara", "she", "her"), ("Ben", "he", "his"), ("Lucy", "she", "her"),
    ("Ravi", "he", "his"), ("Emma", "she", "her"), ("Jack", "he", "his"), ("Nina", "she", "her"),
    ("Carlos", "he", "his"), ("Grace", "she", "her"), ("Leo", "he", "his"), ("Zoe", "she", "her"),
    ("Sam", "he", "his"), ("Mia", "she", "her"), ("Hugo", "he", "his"), ("Aisha", "she", "her"),
    ("Noah", "he", "his"), ("Lena", "she", "her"), ("Ivan", "he", "his"), ("Priya", "she", "her"),
]
# (container, plural item)
GROUPS = [
    ("bags", "apples"), ("boxes", "crayons"), ("baskets", "oranges"), ("jars", "cookies"),
    ("packs", "stickers"), ("trays", "muffins"), ("shelves", "books"), ("bowls", "grapes"),
    ("rows", "chairs"), ("cartons", "eggs"), ("tins", "candies"), ("crates", "lemons"),
]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cards", "shells", "stamps", "beads",
         "cookies", "balloons", "flowers", "coins", "toy cars", "books", "plums", "buttons"]
# (singular, plural)
GOODS = [("pen", "pens"), ("notebook", "notebooks"), ("sandwich", "sandwiches"), ("ticket", "tickets"),
         ("toy", "toys"), ("cup of tea", "cups of tea"), ("comic", "comics"), ("plant", "plants"),
         ("ball", "balls"), ("kite", "kites"), ("lamp", "lamps"), ("mug", "mugs")]
TIMES = [("in the morning", "in the afternoon"), ("on Monday", "on Tuesday"),
         ("on Saturday", "on Sunday"), ("before lunch", "after lunch")]


def _people(rng: random.Random, k: int) -> list[tuple[str, str, str]]:
    return rng.sample(NAMES, k)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# Each template returns (question, solution lines, answer). Numbers stay small so the embedded
# model can learn the task in a short fine-tune.

# ---- level "easy": one step -------------------------------------------------------------------

def _e_groups(rng):
    (n, p, _), = _people(rng, 1)
    box, item = rng.choice(GROUPS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = f"{n} has {a} {box} with {b} {item} in each. How many {item} does {n} have?"
    return q, [f"{n} has {a} {box} with {b} {item} each, so {p} has {a} * {b} = {a * b} {item}."], a * b


def _e_add(rng):
    (n, p, _), = _people(rng, 1)
    item = rng.choice(ITEMS)
    t1, t2 = rng.choice(TIMES)
    a, b = rng.randint(3, 40), rng.randint(3, 40)
    q = f"{n} collected {a} {item} {t1} and {b} {item} {t2}. How many {item} did {n} collect in all?"
    return q, [f"{n} collected {a} {item} {t1} and {b} {t2}, so {p} collected {a} + {b} = {a + b} {item}."], a + b


def _e_give(rng):
    (n, p, _), (f, _, _) = _people(rng, 2)
    item = rng.choice(ITEMS)
    a = rng.randint(10, 50)
    b = rng.randint(2, a - 1)
    q = f"{n} had {a} {item}. {_cap(p)} gave {b} of them to {f}. How many {item} does {n} have now?"
    return q, [f"{n} had {a} {item} and gave {b} to {f}, so {p} has {a} - {b} = {a - b} {item} left."], a - b


def _e_share(rng):
    (n, _, _), = _people(rng, 1)
    item = rng.choice(ITEMS)
    each, k = rng.randint(2, 9), rng.randint(2, 6)
    total = each * k
    q = f"{n} shares {total} {item} equally among {k} friends. How many {item} does each friend get?"
    return q, [f"{n} shares {total} {item} among {k} friends, so each friend gets {total} / {k} = {each} {item}."], each


def _e_price(rng):
    one, many = rng.choice(GOODS)
    price, k = rng.randint(2, 12), rng.randint(2, 8)
    q = f"One {one} costs ${price}. How much do {k} {many} cost?"
    return q, [f"One {one} costs ${price}, so {k} {many} cost {k} * {price} = ${k * price}."], k * price


def _e_age(rng):
    (n, _, _), (m, _, _) = _people(rng, 2)
    a, b = rng.randint(5, 40), rng.randint(2, 30)
    q = f"{n} is {a} years old. {m} is {b} years older than {n}. How old is {m}?"
    return q, [f"{n} is {a} years old and {m} is {b} years older, so {m} is {a} + {b} = {a + b} years old."], a + b


def _e_reading(rng):
    (n, p, _), = _people(rng, 1)
    a, d = rng.randint(3, 20), rng.randint(2, 9)
    q = f"{n} reads {a} pages every day. How many pages does {n} read in {d} days?"
    return q, [f"{n} reads {a} pages a day for {d} days, so {p} reads {a} * {d} = {a * d} pages."], a * d


def _e_spend(rng):
    (n, p, _), = _people(rng, 1)
    one, _ = rng.choice(GOODS)
    a = rng.randint(10, 60)
    b = rng.randint(2, a - 1)
    q = f"{n} had ${a} and spent ${b} on a {one}. How much money does {n} have left?"
    return q, [f"{n} had ${a} and spent ${b}, so {p} has {a} - {b} = ${a - b} left."], a - b


def _e_fewer(rng):
    (n, _, _), (m, _, _) = _people(rng, 2)
    item = rng.choice(ITEMS)
    a = rng.randint(12, 60)
    b = rng.randint(2, a - 2)
    q = f"{n} has {a} {item}. {m} has {b} fewer {item} than {n}. How many {item} does {m} have?"
    return q, [f"{n} has {a} {item} and {m} has {b} fewer, so {m} has {a} - {b} = {a - b} {item}."], a - b


# ---- level "medium": two steps ----------------------------------------------------------------

def _m_change(rng):
    (n, p, _), = _people(rng, 1)
    one, many = rng.choice(GOODS)
    k, price = rng.randint(2, 6), rng.randint(2, 9)
    cost = k * price
    paid = rng.choice([v for v in (20, 50, 100) if v > cost])
    q = f"{n} buys {k} {many} at ${price} each and pays with a ${paid} bill. How much change does {n} get?"
    return q, [
        f"{n} buys {k} {many} at ${price} each, so they cost {k} * {price} = ${cost}.",
        f"{_cap(p)} pays ${paid}, so the change is {paid} - {cost} = ${paid - cost}.",
    ], paid - cost


def _m_groups_extra(rng):
    (n, p, _), = _people(rng, 1)
    box, item = rng.choice(GROUPS)
    a, b, c = rng.randint(2, 8), rng.randint(2, 9), rng.randint(1, 9)
    q = f"{n} has {a} {box} with {b} {item} in each and {c} more {item} on the table. How many {item} does {n} have in total?"
    return q, [
        f"{n} has {a} {box} with {b} {item} each, so the {box} hold {a} * {b} = {a * b} {item}.",
        f"With {c} more on the table, {p} has {a * b} + {c} = {a * b + c} {item}.",
    ], a * b + c


def _m_twice(rng):
    (n, p, _), = _people(rng, 1)
    t1, t2 = rng.choice(TIMES)
    a, k = rng.randint(3, 20), rng.choice([2, 3])
    word = {2: "twice", 3: "three times"}[k]
    q = f"{n} read {a} pages {t1} and {word} as many pages {t2}. How many pages did {n} read altogether?"
    return q, [
        f"{n} read {a} pages {t1} and {word} as many {t2}, so {p} read {a} * {k} = {a * k} pages {t2}.",
        f"Altogether {p} read {a} + {a * k} = {a + a * k} pages.",
    ], a + a * k


def _m_wage(rng):
    (n, p, _), = _people(rng, 1)
    rate, hours = rng.randint(5, 15), rng.randint(2, 8)
    pay = rate * hours
    spent = rng.randint(2, pay - 1)
    q = f"{n} earns ${rate} an hour and works {hours} hours. Then {p} spends ${spent} on lunch. How much money does {n} have left?"
    return q, [
        f"{n} earns ${rate} an hour for {hours} hours, so {p} earns {rate} * {hours} = ${pay}.",
        f"After spending ${spent}, {p} has {pay} - {spent} = ${pay - spent} left.",
    ], pay - spent


def _m_bake_give(rng):
    (n, p, _), = _people(rng, 1)
    trays, per = rng.randint(2, 6), rng.randint(4, 12)
    made = trays * per
    given = rng.randint(2, made - 1)
    q = f"{n} baked {trays} trays of {per} muffins and gave {given} muffins to neighbours. How many muffins are left?"
    return q, [
        f"{n} baked {trays} trays of {per} muffins, so {p} baked {trays} * {per} = {made} muffins.",
        f"After giving away {given}, there are {made} - {given} = {made - given} muffins left.",
    ], made - given


def _m_half_more(rng):
    (n, p, _), (f, _, _) = _people(rng, 2)
    item = rng.choice(ITEMS)
    a, b = 2 * rng.randint(4, 25), rng.randint(2, 20)
    q = f"{n} had {a} {item} and gave half of them to {f}. Then {p} bought {b} more. How many {item} does {n} have now?"
    return q, [
        f"{n} had {a} {item} and gave half to {f}, so {p} kept {a} / 2 = {a // 2} {item}.",
        f"After buying {b} more, {p} has {a // 2} + {b} = {a // 2 + b} {item}.",
    ], a // 2 + b


def _m_two_people_share(rng):
    (n, _, _), (m, _, _) = _people(rng, 2)
    item = rng.choice(ITEMS)
    k, each = rng.randint(2, 5), rng.randint(2, 9)
    total = k * each
    a = rng.randint(1, total - 1)
    q = f"{n} has {a} {item} and {m} has {total - a} {item}. They put them together and share them equally among {k} children. How many {item} does each child get?"
    return q, [
        f"{n} has {a} {item} and {m} has {total - a}, so together they have {a} + {total - a} = {total} {item}.",
        f"Shared among {k} children, each gets {total} / {k} = {each} {item}.",
    ], each


def _m_pen_notebook(rng):
    (n, p, _), = _people(rng, 1)
    (one, many), (one2, _) = rng.sample(GOODS, 2)
    k, p1, p2 = rng.randint(2, 6), rng.randint(2, 9), rng.randint(3, 15)
    q = f"A {one} costs ${p1} and a {one2} costs ${p2}. {n} buys {k} {many} and one {one2}. How much does {p} spend?"
    return q, [
        f"A {one} costs ${p1}, so {k} {many} cost {k} * {p1} = ${k * p1}.",
        f"Adding one {one2} at ${p2}, {n} spends {k * p1} + {p2} = ${k * p1 + p2}.",
    ], k * p1 + p2


# ---- level "hard": three steps ----------------------------------------------------------------

def _h_two_buys_change(rng):
    (n, p, _), = _people(rng, 1)
    (one, many), (one2, many2) = rng.sample(GOODS, 2)
    k1, p1, k2, p2 = rng.randint(2, 4), rng.randint(2, 8), rng.randint(2, 4), rng.randint(2, 8)
    c1, c2 = k1 * p1, k2 * p2
    paid = rng.choice([v for v in (50, 100) if v > c1 + c2])
    q = f"{n} buys {k1} {many} at ${p1} each and {k2} {many2} at ${p2} each. {_cap(p)} pays with a ${paid} bill. How much change does {p} get?"
    return q, [
        f"{n} buys {k1} {many} at ${p1} each, so they cost {k1} * {p1} = ${c1}.",
        f"The {k2} {many2} at ${p2} each cost {k2} * {p2} = ${c2}.",
        f"Together {p} spends {c1} + {c2} = ${c1 + c2}, so the change is {paid} - {c1 + c2} = ${paid - c1 - c2}.",
    ], paid - c1 - c2


def _h_legs(rng):
    hens, cows = rng.randint(2, 12), rng.randint(2, 9)
    (n, _, _), = _people(rng, 1)
    q = f"{n}'s farm has {hens} chickens and {cows} cows. Chickens have 2 legs and cows have 4 legs. How many legs are there in total?"
    return q, [
        f"{n}'s farm has {hens} chickens with 2 legs each, so they have {hens} * 2 = {hens * 2} legs.",
        f"The {cows} cows have 4 legs each, so they have {cows} * 4 = {cows * 4} legs.",
        f"In total there are {hens * 2} + {cows * 4} = {hens * 2 + cows * 4} legs.",
    ], hens * 2 + cows * 4


def _h_week(rng):
    (n, p, _), = _people(rng, 1)
    a, b = rng.randint(2, 9), rng.randint(5, 20)
    q = f"{n} reads {a} pages on each weekday and {b} pages on each day of the weekend. How many pages does {n} read in one week?"
    return q, [
        f"{n} reads {a} pages on each of 5 weekdays, so {p} reads {a} * 5 = {a * 5} pages.",
        f"On the 2 weekend days {p} reads {b} * 2 = {b * 2} pages.",
        f"In one week {p} reads {a * 5} + {b * 2} = {a * 5 + b * 2} pages.",
    ], a * 5 + b * 2


def _h_save(rng):
    (n, p, _), = _people(rng, 1)
    earn = rng.randint(8, 20)
    spend = rng.randint(2, earn - 2)
    weeks = rng.randint(2, 6)
    start = rng.randint(5, 30)
    saved = (earn - spend) * weeks
    q = f"{n} has ${start} saved. Each week {p} earns ${earn} and spends ${spend}. How much money will {n} have after {weeks} weeks?"
    return q, [
        f"{n} earns ${earn} and spends ${spend} each week, so {p} saves {earn} - {spend} = ${earn - spend} a week.",
        f"Over {weeks} weeks {p} saves {earn - spend} * {weeks} = ${saved}.",
        f"With the ${start} {p} already had, {p} will have {start} + {saved} = ${start + saved}.",
    ], start + saved


def _h_three_people(rng):
    (a_n, _, _), (b_n, _, _), (c_n, _, _) = _people(rng, 3)
    item = rng.choice(ITEMS)
    a, k = rng.randint(2, 9), rng.choice([2, 3])
    b = a * k
    d = rng.randint(1, b - 1)
    c = b - d
    word = {2: "twice", 3: "three times"}[k]
    q = f"{a_n} has {a} {item}. {b_n} has {word} as many {item} as {a_n}, and {c_n} has {d} fewer than {b_n}. How many {item} do they have together?"
    return q, [
        f"{a_n} has {a} {item} and {b_n} has {word} as many, so {b_n} has {a} * {k} = {b} {item}.",
        f"{c_n} has {d} fewer than {b_n}, so {c_n} has {b} - {d} = {c} {item}.",
        f"Together they have {a} + {b} = {a + b}, and {a + b} + {c} = {a + b + c} {item}.",
    ], a + b + c


def _h_boxes_share(rng):
    (n, p, _), = _people(rng, 1)
    box, item = rng.choice(GROUPS)
    while True:  # at least 2 full boxes and some loose items, total divisible by k
        k, each, per_box = rng.randint(2, 5), rng.randint(3, 9), rng.randint(3, 8)
        total = k * each
        boxes, loose = divmod(total, per_box)
        if boxes >= 2 and loose:
            break
    q = f"{n} has {boxes} {box} with {per_box} {item} in each and {loose} loose {item}. {_cap(p)} shares all of them equally among {k} friends. How many {item} does each friend get?"
    return q, [
        f"{n} has {boxes} {box} with {per_box} {item} each, so the {box} hold {boxes} * {per_box} = {boxes * per_box} {item}.",
        f"With {loose} loose ones, {p} has {boxes * per_box} + {loose} = {total} {item}.",
        f"Shared among {k} friends, each gets {total} / {k} = {each} {item}.",
    ], each


LEVELS: dict[str, list[Callable[[random.Random], tuple[str, list[str], int]]]] = {
    "easy": [_e_groups, _e_add, _e_give, _e_share, _e_price, _e_age, _e_reading, _e_spend, _e_fewer],
    "medium": [_m_change, _m_groups_extra, _m_twice, _m_wage, _m_bake_give, _m_half_more,
               _m_two_people_share, _m_pen_notebook],
    "hard": [_h_two_buys_change, _h_legs, _h_week, _h_save, _h_three_people, _h_boxes_share],
}
# Named mixes of levels; a problem draws its level uniformly, then a template of that level.
# "default" (1 and 2 steps) is calibrated for the embedded model: the raw model solves 17% of
# "easy" and 0% of "medium" problems (docs/data.md), so the seed starts low and a short
# fine-tune has room to show a gain on both halves.
MIXES: dict[str, tuple[str, ...]] = {"default": ("easy", "medium"), "mixed": ("easy", "medium", "hard")}
LEVEL_NAMES = (*LEVELS, *MIXES)

_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = \$?(\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: a / b}


split_of = hash_split  # the split a question text belongs to, fixed by a hash of the text (not by seeds)


def check_solution(solution: str, answer: int) -> None:
    """Recompute every ``a op b = c`` in a solution and its ``#### N``; raise if any is wrong."""
    steps = _STEP.findall(solution)
    if not steps:
        raise ValueError(f"solution has no arithmetic step: {solution!r}")
    for a, op, b, c in steps:
        if _OPS[op](int(a), int(b)) != int(c):
            raise ValueError(f"wrong step {a} {op} {b} = {c} in {solution!r}")
    final = final_number(solution)
    if final != str(answer) or int(steps[-1][3]) != answer:
        raise ValueError(f"final answer {final} does not match computed {answer} in {solution!r}")


def generate_problems(
    n: int, *, seed: int = 0, level: str = "default", split: str = "train"
) -> list[Problem]:
    """``n`` distinct word problems ``{"question", "answer"}`` in GSM8K format (answer ends ``#### N``).

    Deterministic in (``n``, ``seed``, ``level``, ``split``); a longer list with the same arguments
    starts with the shorter one. ``level`` is ``easy`` (1 step), ``medium`` (2 steps), ``hard``
    (3 steps), ``default`` (easy and medium, half each on average) or ``mixed`` (all three). Questions of ``split``
    ``"test"`` never occur in ``"train"`` for any seed.
    """
    if level not in LEVEL_NAMES:
        raise UserError(f"unknown math level '{level}'; expected one of {', '.join(LEVEL_NAMES)}")
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
    if n < 0:
        raise UserError(f"number of problems must be >= 0, got {n}")
    pools = [LEVELS[name] for name in MIXES.get(level, (level,))]
    # A string seed is hashed with SHA-512 by `random`, so the stream is the same on every install.
    rng = random.Random(f"mathgen/{level}/{split}/{seed}")

    def draw() -> tuple[str, Callable[[], Problem]]:
        pool = pools[rng.randrange(len(pools))]
        question, lines, answer = pool[rng.randrange(len(pool))](rng)

        def make() -> Problem:
            solution = "\n".join(lines) + f"\n#### {answer}"
            check_solution(solution, answer)
            return {"question": question, "answer": solution}

        return question, make

    return distinct_of_split(n, split, draw, f"'{level}' problems")
