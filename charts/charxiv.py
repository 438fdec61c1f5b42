"""The CharXiv release format: loader and writer, the 19 descriptive templates and the reasoning answer types.

Design choices
- A release folder holds `image_metadata_{split}.json`, `descriptive_{split}.json`, `reasoning_{split}.json`
  (either at the top or under `data/`, as in the official repository) and `images/{figure_id}.jpg`.
  The synthetic generator writes exactly this layout, so one loader serves both.
- Every question becomes a `ChartQuestion` with a stable key: `{figure_id}_{i}` for the i-th descriptive
  question of a chart and `{figure_id}` for its reasoning question (the keys CharXiv's result files use).
- The template and instruction wording is our own; only the meaning of each of the 19 templates, the subplot
  locator rule (every template but 18 and 19 is prefixed with where the subplot is), the rubric families
  and the answer-type rules follow docs/methods.md#chart-eval-questions.
- Keys the official files do not have (the synthetic set's `skills`, `exact`) are kept in `extra`, so the
  same loader reads both and the official readers ignore them.
- Test-split answers are null in the release; such questions load with `answer=None` and are reported as
  ungraded rather than wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from skillweave.errors import UsageError

NOT_APPLICABLE = "Not Applicable"

# ---- descriptive templates ------------------------------------------------------------------------
# qid -> (short question used by the judge, the answer rules shown to the model, rubric family)
_NA = f"If the chart has no such element, answer '{NOT_APPLICABLE}'."
_TICK_RULE = (
    "Give the tick text exactly as written. If the axis is shared by several subplots, use it; if the axis "
    "appears on both sides, use the bottom (x) or left (y) one. Leave out units or scale factors printed "
    "away from the tick itself (in the axis label or a corner)."
)
DESCRIPTIVE_TEMPLATES: dict[int, dict[str, str]] = {
    1: {"short": "What is the title of the plot?", "rubric": "title",
        "ask": "what is its title?",
        "rules": f"Answer with the title text written on the plot. If there is no title, or only a panel letter, "
                 f"answer '{NOT_APPLICABLE}'."},
    2: {"short": "What is the label of the x-axis?", "rubric": "ocr",
        "ask": "what is the x-axis label?",
        "rules": f"Answer with the written x-axis label (a shared x-axis counts; with axes at top and bottom, use "
                 f"the bottom one). If there is no x-axis label, answer '{NOT_APPLICABLE}'."},
    3: {"short": "What is the label of the y-axis?", "rubric": "ocr",
        "ask": "what is the y-axis label?",
        "rules": f"Answer with the written y-axis label (a shared y-axis counts; with axes on both sides, use the "
                 f"left one). If there is no y-axis label, answer '{NOT_APPLICABLE}'."},
    4: {"short": "What is the leftmost labeled tick on the x-axis?", "rubric": "ocr",
        "ask": "what is the leftmost labeled tick on the x-axis?", "rules": _TICK_RULE},
    5: {"short": "What is the rightmost labeled tick on the x-axis?", "rubric": "ocr",
        "ask": "what is the rightmost labeled tick on the x-axis?", "rules": _TICK_RULE},
    6: {"short": "What is the lowest labeled tick on the y-axis?", "rubric": "ocr",
        "ask": "what is the lowest labeled tick (lowest on the page) on the y-axis?", "rules": _TICK_RULE},
    7: {"short": "What is the highest labeled tick on the y-axis?", "rubric": "ocr",
        "ask": "what is the highest labeled tick (highest on the page) on the y-axis?", "rules": _TICK_RULE},
    8: {"short": "What is the difference between consecutive numerical tick values on the x-axis?", "rubric": "quant",
        "ask": "what is the difference between consecutive numerical tick values on the x-axis?",
        "rules": f"{_TICK_RULE} If the ticks are not numbers, are missing, or are not evenly spaced in value, answer "
                 f"'{NOT_APPLICABLE}'."},
    9: {"short": "What is the difference between consecutive numerical tick values on the y-axis?", "rubric": "quant",
        "ask": "what is the difference between consecutive numerical tick values on the y-axis?",
        "rules": f"{_TICK_RULE} If the ticks are not numbers, are missing, or are not evenly spaced in value, answer "
                 f"'{NOT_APPLICABLE}'."},
    10: {"short": "How many lines are there?", "rubric": "quant",
         "ask": "how many lines does it contain?",
         "rules": f"Count the data lines only; grid lines, tick marks and horizontal or vertical reference lines do "
                  f"not count. If it is not a line plot, answer '{NOT_APPLICABLE}'."},
    11: {"short": "Do any lines intersect?", "rubric": "bool",
         "ask": "do any of the lines intersect?",
         "rules": f"Answer 'Yes' or 'No', ignoring grid and reference lines. If it is not a line plot, answer "
                  f"'{NOT_APPLICABLE}'."},
    12: {"short": "How many discrete labels are there in the legend?", "rubric": "quant",
         "ask": "how many discrete labels does its legend have?",
         "rules": f"Count only legend entries that belong to this plot, even if the legend sits outside it. {_NA}"},
    13: {"short": "What are the names of the labels in the legend (top to bottom, then left to right)?",
         "rubric": "enum",
         "ask": "what are the labels in its legend?",
         "rules": f"List the labels top to bottom, then left to right, separated by commas; only entries that belong "
                  f"to this plot count. {_NA}"},
    14: {"short": "What is the difference between the largest and smallest tick labels on the colorbar?",
         "rubric": "quant",
         "ask": "what is the difference between the largest and smallest tick labels of its colorbar (continuous "
                "legend)?",
         "rules": f"Drop any percent sign. If the plot has no colorbar of its own, answer '{NOT_APPLICABLE}'."},
    15: {"short": "What is the largest tick label on the colorbar?", "rubric": "quant",
         "ask": "what is the largest tick label of its colorbar (continuous legend)?",
         "rules": f"Drop any percent sign. If the plot has no colorbar of its own, answer '{NOT_APPLICABLE}'."},
    16: {"short": "What is the general trend of the data from left to right?", "rubric": "trend",
         "ask": "how does the data generally change from left to right?",
         "rules": "Answer in a few words, for example 'increases' or 'decreases then stabilizes'."},
    17: {"short": "How many explicitly labeled ticks are there across all axes?", "rubric": "quant",
         "ask": "how many explicitly labeled ticks are there across all of its axes?",
         "rules": "Count every tick that has a written label, on every axis of the plot (shared axes included)."},
    18: {"short": "What is the layout of the subplots?", "rubric": "layout",
         "ask": "What is the layout of the subplots?",
         "rules": "Answer as 'n by m', n rows and m columns. A figure without subplots is '1 by 1'."},
    19: {"short": "How many subplots are there?", "rubric": "quant",
         "ask": "How many subplots are there?",
         "rules": "Answer with the total number of subplots. A figure without subplots has 1."},
}
NO_LOCATOR_QIDS = frozenset({18, 19})

DESCRIPTIVE_GROUPS: dict[str, tuple[int, ...]] = {
    "Information Extraction": (1, 2, 3, 4, 5, 6, 7),
    "Enumeration": (8, 9, 13, 14, 15),
    "Pattern Recognition": (11, 16, 18),
    "Counting": (10, 12, 19),
    "Compositionality": (17,),
}
QID_TO_GROUP = {qid: group for group, qids in DESCRIPTIVE_GROUPS.items() for qid in qids}

# ---- reasoning answer types -----------------------------------------------------------------------
ANSWER_TYPES = {1: "Text-in-Chart", 2: "Text-in-General", 3: "Number-in-Chart", 4: "Number-in-General"}
QA_SOURCES = {1: "GPT-Sourced", 2: "GPT-Inspired", 3: "Completely Human", 4: "Synthetic (exact)"}
SUBJECTS = {
    "cs": "Computer Science", "econ": "Economics", "eess": "Electrical Engineering and Systems Science",
    "math": "Mathematics", "physics": "Physics", "q-bio": "Quantitative Biology", "q-fin": "Quantitative Finance",
    "stat": "Statistics",
}
_REASONING_RULES = {
    1: ["Your final answer must be text that is written in the chart and answers the question.",
        "Separate several terms with commas.",
        "Give full subplot and legend names unless the question asks for something shorter (such as a letter)."],
    2: ["If the question lists options, answer with one of them.",
        "Follow any extra instruction in the question.",
        "Otherwise answer with a short phrase."],
    3: ["Your final answer must be a number written in the chart that answers the question, even if approximate.",
        "You may take the number out of a longer piece of text."],
}


def number_instruction(answer: str) -> str:
    """The Number-in-General format rule, derived from the gold answer's decimal places."""
    text = str(answer).strip()
    if "." not in text:
        return "Your final answer must be an exact integer."
    decimals = len(text.split(".", 1)[1])
    return f"Your final answer must be a number with {decimals} decimal places."


def reasoning_rules(inst_category: int, answer: str | None) -> list[str]:
    if inst_category in _REASONING_RULES:
        return list(_REASONING_RULES[inst_category])
    if inst_category == 4:
        return [number_instruction(answer if answer is not None else "0")]
    raise UsageError(f"reasoning inst_category {inst_category!r} is not one of 1-4 ({ANSWER_TYPES})")


def subplot_prefix(subplot_loc: Any) -> str:
    """Where the asked-about subplot is: `[0, 0]` is a single plot, `[r, c]` is 1-based, a string is free text."""
    if isinstance(subplot_loc, list | tuple) and len(subplot_loc) == 2:
        row, col = subplot_loc
        if row == 0:
            return "For the plot shown, "
        return f"For the subplot in row {row}, column {col}, "
    if isinstance(subplot_loc, str) and subplot_loc.strip():
        return f"For {subplot_loc.strip()}, "
    raise UsageError(f"subplot_loc {subplot_loc!r} must be [row, col] or a description string")


def descriptive_question(qid: int, subplot_loc: Any) -> tuple[str, list[str]]:
    """The question text (with the subplot locator where it applies) and its answer rules."""
    if qid not in DESCRIPTIVE_TEMPLATES:
        raise UsageError(f"descriptive template id {qid!r} is not one of 1-19")
    template = DESCRIPTIVE_TEMPLATES[qid]
    text = template["ask"] if qid in NO_LOCATOR_QIDS else subplot_prefix(subplot_loc) + template["ask"]
    return text, [template["rules"]]


def subplot_bucket(num_subplots: int) -> str:
    return "1 Subplot" if num_subplots <= 1 else "2-4 Subplots" if num_subplots <= 4 else "5+ Subplots"


def year_label(year: Any) -> str:
    text = str(year)
    return f"20{text}" if len(text) == 2 and text.isdigit() else text


# ---- questions ------------------------------------------------------------------------------------
Mode = Literal["descriptive", "reasoning"]


@dataclass
class ChartQuestion:
    """One question about one chart, with everything grading and the breakdowns need."""

    key: str
    mode: Mode
    figure_id: str
    image_path: str
    question: str  # without the answer rules (what the judge sees)
    rules: list[str]  # the format rules appended for the model
    answer: str | None
    num_subplots: int
    subject: str
    year: str
    qid: int | None = None  # descriptive template id
    inst_category: int | None = None  # reasoning answer type
    qa_source: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The descriptive question group or the reasoning answer type."""
        if self.mode == "descriptive":
            return QID_TO_GROUP[int(self.qid)]
        return ANSWER_TYPES[int(self.inst_category)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ChartQuestion:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Release:
    """One split of a CharXiv-format folder."""

    root: Path
    split: str
    metadata: dict[str, dict]
    descriptive: dict[str, dict]
    reasoning: dict[str, dict]

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    def image_path(self, figure_id: Any) -> Path:
        return self.images_dir / f"{figure_id}.jpg"

    def questions(self, modes: tuple[str, ...] = ("descriptive", "reasoning")) -> list[ChartQuestion]:
        out: list[ChartQuestion] = []
        for key in _sorted_keys(set(self.descriptive) | set(self.reasoning)):
            meta = self.metadata.get(key, {})
            d = self.descriptive.get(key)
            num_subplots = int(d["num_subplots"]) if d else int(meta.get("num_subplots", 1))
            common = {
                "figure_id": str(key), "image_path": str(self.image_path(key)), "num_subplots": num_subplots,
                "subject": str(meta.get("category", "unknown")), "year": str(meta.get("year", "unknown")),
            }
            if d and "descriptive" in modes:
                known = {"figure_id", "num_subplots", "subplot_loc", "qids", "answers"}
                answers = d.get("answers") or [None] * len(d["qids"])
                for i, (qid, answer) in enumerate(zip(d["qids"], answers, strict=True)):
                    text, rules = descriptive_question(int(qid), d["subplot_loc"])
                    out.append(ChartQuestion(
                        key=f"{key}_{i}", mode="descriptive", question=text, rules=rules,
                        answer=None if answer is None else str(answer), qid=int(qid),
                        extra={"subplot_loc": d["subplot_loc"], **{k: v for k, v in d.items() if k not in known}},
                        **common,
                    ))
            r = self.reasoning.get(key)
            if r and "reasoning" in modes:
                known = {"figure_id", "query", "answer", "inst_category", "qa_source"}
                answer = r.get("answer")
                out.append(ChartQuestion(
                    key=str(key), mode="reasoning", question=str(r["query"]).strip(),
                    rules=reasoning_rules(int(r["inst_category"]), answer),
                    answer=None if answer is None else str(answer), inst_category=int(r["inst_category"]),
                    qa_source=int(r.get("qa_source") or 0) or None,
                    extra={k: v for k, v in r.items() if k not in known},
                    **common,
                ))
        return out

    def check_images(self) -> list[str]:
        """Figure ids whose image file is missing."""
        ids = set(self.descriptive) | set(self.reasoning)
        return [i for i in _sorted_keys(ids) if not self.image_path(i).exists()]


def _sorted_keys(keys) -> list[str]:
    return sorted((str(k) for k in keys), key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))


def _json_folder(root: Path, split: str) -> Path:
    for candidate in (root, root / "data"):
        if (candidate / f"descriptive_{split}.json").exists() or (candidate / f"reasoning_{split}.json").exists():
            return candidate
    return root


def available_splits(root: str | Path) -> list[str]:
    root = Path(root)
    found = set()
    for folder in (root, root / "data"):
        for path in folder.glob("*_*.json") if folder.is_dir() else []:
            stem = path.stem
            for prefix in ("descriptive_", "reasoning_"):
                if stem.startswith(prefix):
                    found.add(stem[len(prefix):])
    return sorted(found)


def load_release(root: str | Path, split: str | None = None, *, require_images: bool = True) -> Release:
    """Read one split of a CharXiv-format folder; errors name the missing file and how to fix it."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"chart data folder '{root}' does not exist; create one with `skillweave charts synth --out {root}`")
    splits = available_splits(root)
    if split is None:
        if len(splits) == 1:
            split = splits[0]
        elif "val" in splits:
            split = "val"
        else:
            raise UsageError(
                f"no descriptive_<split>.json or reasoning_<split>.json in '{root}' (or its data/ folder); "
                "expected the CharXiv release layout"
            )
    elif split not in splits:
        raise UsageError(f"split '{split}' not found in '{root}'; available: {', '.join(splits) or 'none'}")
    folder = _json_folder(root, split)

    def read(name: str, required: bool) -> dict:
        path = folder / f"{name}_{split}.json"
        if not path.exists():
            if required:
                raise UsageError(f"missing {path}; a CharXiv folder needs image_metadata_{split}.json")
            return {}
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path} must hold a JSON object keyed by figure id")
        return {str(k): v for k, v in data.items()}

    release = Release(root, split, read("image_metadata", True), read("descriptive", False), read("reasoning", False))
    for key, d in release.descriptive.items():
        if len(d.get("qids", [])) != len(d.get("answers") or d.get("qids", [])):
            raise UsageError(f"descriptive_{split}.json entry {key}: qids and answers differ in length")
    if require_images:
        missing = release.check_images()
        if missing:
            raise UsageError(
                f"{len(missing)} chart images missing under {release.images_dir} (first: {missing[0]}.jpg); "
                "unpack the release images there"
            )
    return release


def write_release(root: str | Path, split: str, metadata: dict, descriptive: dict, reasoning: dict) -> Path:
    """Write the three JSON files of a split (the images are written by the caller under `images/`)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    for name, data in (("image_metadata", metadata), ("descriptive", descriptive), ("reasoning", reasoning)):
        (root / f"{name}_{split}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return root
