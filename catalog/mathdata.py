"""The bundled math question set, and loaders for user question datasets (JSONL or CSV).

Design choices
- Every bundled question is generated from a seeded template whose answer is computed, then checked by an
  independent verifier (substitute the root back, recount by brute force, ...). A question whose check fails
  is never written, so the shipped answers are correct by construction.
- Each question carries its subject (MATH-style: prealgebra, algebra, number_theory, geometry,
  counting_and_probability) and its *true* coarse skill, so skill extraction can be scored against ground
  truth and the `bundled` bank (catalog/bank.py) needs no model.
- Split: per skill, the first `BANK_PER_SKILL` questions are `train` (they feed the bank) and the rest are
  `test` (the solver is evaluated on them); the bank never contains a test question.
- Answers are canonical strings: integers ("42") or reduced fractions ("3/8"); `solution` is a short worked
  solution ending in "The answer is X." (what an exemplar shows the solver).

Regenerate the file with `python -m skillweave.catalog.mathdata` (deterministic: same seed, same bytes).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from fractions import Fraction
from itertools import combinations, permutations
from pathlib import Path

from skillweave.errors import UsageError

DATA_FILE = Path(__file__).parent / "data" / "math_questions.jsonl"
SEED = 20240601
PER_SKILL = 6
BANK_PER_SKILL = 4

# skill -> (subject, one-line definition)
SKILLS: dict[str, tuple[str, str]] = {
    "percentage": ("prealgebra", "Compute a percent of a quantity or a percent change."),
    "ratio_proportion": ("prealgebra", "Split or scale quantities in a given ratio."),
    "order_of_operations": (
        "prealgebra",
        "Evaluate an arithmetic expression respecting operator precedence.",
    ),
    "linear_equations": ("algebra", "Solve a linear equation in one unknown."),
    "systems_of_linear_equations": ("algebra", "Solve two linear equations in two unknowns."),
    "quadratic_equations": ("algebra", "Find roots of a quadratic by factoring or Vieta's formulas."),
    "gcd_lcm": ("number_theory", "Compute greatest common divisors and least common multiples."),
    "modular_arithmetic": ("number_theory", "Find remainders of sums, products and powers."),
    "base_conversion": ("number_theory", "Convert numbers between positional bases."),
    "pythagorean_theorem": ("geometry", "Use a^2 + b^2 = c^2 in right triangles."),
    "area_perimeter": ("geometry", "Compute areas and perimeters of rectangles and triangles."),
    "angle_sum": ("geometry", "Use the angle sums of triangles and polygons."),
    "combinations": ("counting_and_probability", "Count unordered selections (binomial coefficients)."),
    "permutations": ("counting_and_probability", "Count ordered arrangements."),
    "basic_probability": (
        "counting_and_probability",
        "Compute probabilities as favourable over total outcomes.",
    ),
}


def _frac(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


# Each generator returns (question, answer, solution, verified) for one random draw.
Gen = Callable[[random.Random], tuple[str, str, str, bool]]


def _percentage(r: random.Random):
    if r.random() < 0.5:
        p, base = r.choice([10, 20, 25, 30, 40, 50, 60, 75, 80, 15]), r.randrange(2, 40) * 20
        ans = Fraction(p * base, 100)
        q = f"What is {p}% of {base}?"
        sol = f"{p}% of {base} is {p}/100 * {base} = {_frac(ans)}."
        ok = ans * 100 == p * base
    else:
        price, p = r.randrange(2, 30) * 10, r.choice([10, 20, 25, 30, 50])
        ans = Fraction(price * (100 - p), 100)
        q = f"A jacket costs {price} dollars. It is discounted by {p}%. What is the sale price in dollars?"
        sol = f"The discount is {p}/100 * {price} = {_frac(Fraction(price * p, 100))}, so the price is {price} - that = {_frac(ans)}."
        ok = ans + Fraction(price * p, 100) == price
    return q, _frac(ans), sol, ok


def _ratio(r: random.Random):
    a, b, unit = r.randrange(1, 6), r.randrange(2, 8), r.randrange(2, 12)
    while math.gcd(a, b) != 1 or a == b:
        a, b = r.randrange(1, 6), r.randrange(2, 8)
    total = (a + b) * unit
    q = f"Alice and Bob share {total} marbles in the ratio {a}:{b}. How many marbles does Bob get?"
    ans = b * unit
    sol = f"There are {a}+{b} = {a + b} parts, each worth {total}/{a + b} = {unit}, so Bob gets {b}*{unit} = {ans}."
    ok = Fraction(total - ans, ans) == Fraction(a, b)
    return q, str(ans), sol, ok


def _order_ops(r: random.Random):
    a, b, c, d = (r.randrange(2, 13) for _ in range(4))
    expr = f"{a} + {b} * {c} - {d}"
    ans = a + b * c - d
    sol = f"Multiply first: {b} * {c} = {b * c}; then {a} + {b * c} - {d} = {ans}."
    ok = eval(expr, {"__builtins__": {}}) == ans  # noqa: S307 - our own literal arithmetic
    return f"Evaluate {expr}.", str(ans), sol, ok


def _linear(r: random.Random):
    a, x, b = r.randrange(2, 10), r.randrange(-9, 13), r.randrange(-20, 21)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    q = f"Solve for x: {a}x {sign} {abs(b)} = {c}."
    move = f"Subtract {b} from both sides" if b >= 0 else f"Add {-b} to both sides"
    sol = f"{move}: {a}x = {c - b}. Divide by {a}: x = {x}."
    return q, str(x), sol, a * x + b == c


def _system(r: random.Random):
    x, y = r.randrange(-5, 10), r.randrange(-5, 10)
    s, d = x + y, x - y
    q = f"If x + y = {s} and x - y = {d}, what is the value of x * y?"
    sol = (
        f"Adding the equations gives 2x = {s + d}, so x = {x}; then y = {s} - {x} = {y}, and x * y = {x * y}."
    )
    ok = (x + y == s) and (x - y == d)
    return q, str(x * y), sol, ok


def _quadratic(r: random.Random):
    p, q_ = r.randrange(1, 10), r.randrange(1, 10)
    while p == q_:
        q_ = r.randrange(1, 10)
    b, c = -(p + q_), p * q_
    question = f"What is the larger root of x^2 - {-b}x + {c} = 0?"
    ans = max(p, q_)
    sol = f"Factor: (x - {p})(x - {q_}) = 0, so the roots are {p} and {q_}; the larger is {ans}."
    ok = all(t * t + b * t + c == 0 for t in (p, q_))
    return question, str(ans), sol, ok


def _gcd_lcm(r: random.Random):
    g = r.randrange(2, 9)
    a, b = g * r.randrange(2, 12), g * r.randrange(2, 12)
    while a == b:
        b = g * r.randrange(2, 12)
    if r.random() < 0.5:
        ans = math.gcd(a, b)
        brute = max(d for d in range(1, min(a, b) + 1) if a % d == 0 and b % d == 0)
        return (
            f"What is the greatest common divisor of {a} and {b}?",
            str(ans),
            f"The common divisors of {a} and {b} are bounded by the Euclidean algorithm result {ans}.",
            ans == brute,
        )
    ans = a * b // math.gcd(a, b)
    brute = next(m for m in range(max(a, b), a * b + 1) if m % a == 0 and m % b == 0)
    return (
        f"What is the least common multiple of {a} and {b}?",
        str(ans),
        f"lcm = {a} * {b} / gcd({a}, {b}) = {a * b} / {math.gcd(a, b)} = {ans}.",
        ans == brute,
    )


def _modular(r: random.Random):
    base, exp, m = r.randrange(2, 10), r.randrange(5, 40), r.randrange(3, 12)
    ans = pow(base, exp, m)
    q = f"What is the remainder when {base}^{exp} is divided by {m}?"
    sol = f"Reduce powers of {base} modulo {m} step by step; {base}^{exp} mod {m} = {ans}."
    return q, str(ans), sol, (base**exp) % m == ans


def _base(r: random.Random):
    b, n = r.choice([2, 3, 5, 7, 8]), r.randrange(9, 200)
    digits, k = [], n
    while k:
        digits.append(str(k % b))
        k //= b
    rep = "".join(reversed(digits))
    q = f"Convert the base-{b} number {rep}_{b} to base 10."
    sol = (
        f"Expand by powers of {b}: "
        + " + ".join(f"{d}*{b}^{i}" for i, d in enumerate(reversed(rep)))
        + f" = {n}."
    )
    return q, str(n), sol, int(rep, b) == n


def _pythagoras(r: random.Random):
    m, n = r.randrange(2, 6), r.randrange(1, 5)
    while n >= m:
        n = r.randrange(1, m)
    k = r.randrange(1, 4)
    a, b, c = k * (m * m - n * n), k * 2 * m * n, k * (m * m + n * n)
    if r.random() < 0.5:
        return (
            f"A right triangle has legs of length {a} and {b}. How long is its hypotenuse?",
            str(c),
            f"c = sqrt({a}^2 + {b}^2) = sqrt({a * a + b * b}) = {c}.",
            a * a + b * b == c * c,
        )
    return (
        f"A right triangle has hypotenuse {c} and one leg {a}. How long is the other leg?",
        str(b),
        f"b = sqrt({c}^2 - {a}^2) = sqrt({c * c - a * a}) = {b}.",
        a * a + b * b == c * c,
    )


def _area(r: random.Random):
    w, h = r.randrange(2, 20), r.randrange(2, 20)
    kind = r.choice(["area", "perimeter", "triangle"])
    if kind == "area":
        return (
            f"A rectangle is {w} cm wide and {h} cm tall. What is its area in square cm?",
            str(w * h),
            f"Area = width * height = {w} * {h} = {w * h}.",
            sum(h for _ in range(w)) == w * h,
        )
    if kind == "perimeter":
        return (
            f"A rectangle is {w} cm wide and {h} cm tall. What is its perimeter in cm?",
            str(2 * (w + h)),
            f"Perimeter = 2 * ({w} + {h}) = {2 * (w + h)}.",
            w + h + w + h == 2 * (w + h),
        )
    w = w + (w % 2)
    return (
        f"A triangle has base {w} and height {h}. What is its area?",
        str(w * h // 2),
        f"Area = base * height / 2 = {w} * {h} / 2 = {w * h // 2}.",
        Fraction(w * h, 2) == w * h // 2,
    )


def _angles(r: random.Random):
    if r.random() < 0.5:
        a, b = r.randrange(20, 80), r.randrange(20, 80)
        ans = 180 - a - b
        return (
            f"Two angles of a triangle measure {a} and {b} degrees. What is the third angle in degrees?",
            str(ans),
            f"The angles of a triangle sum to 180, so 180 - {a} - {b} = {ans}.",
            a + b + ans == 180,
        )
    n = r.randrange(5, 13)
    ans = Fraction(180 * (n - 2), n)
    return (
        f"What is the measure in degrees of each interior angle of a regular polygon with {n} sides?",
        _frac(ans),
        f"The interior angles sum to 180*({n}-2) = {180 * (n - 2)}; divided by {n} gives {_frac(ans)}.",
        ans * n + 360 == 180 * n,
    )


def _combinations(r: random.Random):
    n, k = r.randrange(5, 12), r.randrange(2, 5)
    ans = math.comb(n, k)
    q = f"In how many ways can a committee of {k} people be chosen from {n} people?"
    sol = f"Order does not matter: C({n}, {k}) = {n}! / ({k}! * {n - k}!) = {ans}."
    return q, str(ans), sol, sum(1 for _ in combinations(range(n), k)) == ans


def _permutations(r: random.Random):
    n, k = r.randrange(4, 8), r.randrange(2, 4)
    ans = math.perm(n, k)
    q = f"In how many ways can {k} different medals (gold, silver, bronze...) be awarded to {k} of {n} runners?"
    sol = f"Order matters: {n} * {n - 1}" + (f" * {n - 2}" if k == 3 else "") + f" = {ans}."
    return q, str(ans), sol, sum(1 for _ in permutations(range(n), k)) == ans


def _probability(r: random.Random):
    if r.random() < 0.5:
        red, blue = r.randrange(1, 10), r.randrange(1, 10)
        ans = Fraction(red, red + blue)
        return (
            f"A bag has {red} red and {blue} blue marbles. One marble is drawn at random. What is the "
            f"probability that it is red? Give a fraction in lowest terms.",
            _frac(ans),
            f"There are {red + blue} marbles and {red} are red, so the probability is {red}/{red + blue} = {_frac(ans)}.",
            Fraction(sum(1 for m in range(red + blue) if m < red), red + blue) == ans,
        )
    target = r.randrange(3, 12)
    hits = sum(1 for a in range(1, 7) for b in range(1, 7) if a + b == target)
    ans = Fraction(hits, 36)
    return (
        f"Two fair six-sided dice are rolled. What is the probability that the sum is {target}? "
        f"Give a fraction in lowest terms.",
        _frac(ans),
        f"Of the 36 equally likely outcomes, {hits} give a sum of {target}, so the probability is {_frac(ans)}.",
        hits == 6 - abs(target - 7),
    )


GENERATORS: dict[str, Gen] = {
    "percentage": _percentage,
    "ratio_proportion": _ratio,
    "order_of_operations": _order_ops,
    "linear_equations": _linear,
    "systems_of_linear_equations": _system,
    "quadratic_equations": _quadratic,
    "gcd_lcm": _gcd_lcm,
    "modular_arithmetic": _modular,
    "base_conversion": _base,
    "pythagorean_theorem": _pythagoras,
    "area_perimeter": _area,
    "angle_sum": _angles,
    "combinations": _combinations,
    "permutations": _permutations,
    "basic_probability": _probability,
}


def generate_questions(
    seed: int = SEED, per_skill: int = PER_SKILL, bank_per_skill: int = BANK_PER_SKILL
) -> list[dict]:
    """Seeded questions, `per_skill` distinct ones per skill, each verified; raises if a check ever fails."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for skill, gen in GENERATORS.items():
        subject = SKILLS[skill][0]
        seen: set[str] = set()
        tries = 0
        while len(seen) < per_skill:
            tries += 1
            if tries > 1000:
                raise RuntimeError(f"generator for {skill} cannot produce {per_skill} distinct questions")
            question, answer, solution, verified = gen(rng)
            if not verified:
                raise RuntimeError(f"generated answer failed its check: {skill}: {question} -> {answer}")
            if question in seen:
                continue
            seen.add(question)
            index = len(seen) - 1
            rows.append(
                {
                    "id": f"{skill}-{index}",
                    "subject": subject,
                    "skill": skill,
                    "question": question,
                    "answer": answer,
                    "solution": f"{solution} The answer is {answer}.",
                    "split": "train" if index < bank_per_skill else "test",
                }
            )
    return rows


def write_bundled(path: Path = DATA_FILE) -> int:
    rows = generate_questions()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def bundled_questions(split: str | None = None) -> list[dict]:
    """The shipped question set (`split` = train, test or None for all)."""
    rows = load_questions(DATA_FILE)
    return rows if split is None else [r for r in rows if r.get("split") == split]


def load_questions(path: str | Path, split: str | None = None) -> list[dict]:
    """A question dataset: JSONL (one object a line) or CSV, with `question`, `answer`, optional `subject`.

    `bundled` names the shipped set. Rows get an `id` (given or the line number) and keep all other fields.
    """
    if str(path) == "bundled":
        return bundled_questions(split)
    from skillweave.catalog.textfiles import read_csv, read_text

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"dataset '{path}' does not exist; pass a .jsonl or .csv file, or 'bundled'")
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        rows = read_csv(path, "dataset")
        if not rows or "question" not in rows[0]:
            raise UsageError(f"dataset '{path}' needs a 'question' column (found: {list(rows[0]) if rows else None})")
    else:
        for lineno, line in enumerate(read_text(path, "dataset").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"dataset '{path}' line {lineno} is not JSON: {exc}") from None
            if not isinstance(row, dict) or "question" not in row:
                raise UsageError(f"dataset '{path}' line {lineno} needs an object with a 'question' field")
            rows.append(row)
    out = []
    for i, row in enumerate(rows):
        if not str(row.get("question") or "").strip():
            raise UsageError(f"dataset '{path}' row {i + 1} has an empty question")
        row = {
            **row,
            "id": str(row.get("id") or i),
            "answer": "" if row.get("answer") is None else str(row["answer"]),
            "subject": row.get("subject") or "",
        }
        out.append(row)
    if not out:
        raise UsageError(f"dataset '{path}' has no questions")
    if split is not None:
        out = [r for r in out if r.get("split") == split]
    return out


if __name__ == "__main__":
    print(f"wrote {write_bundled()} questions to {DATA_FILE}")
