"""Chart grading: programmatic checks for exact answers, judge-reply parsing, accuracy and breakdowns.

Design choices
- The judge's score is the headline score, as in CharXiv. A judge reply that cannot be parsed after its
  retries scores -1: it counts as wrong in every accuracy and is tallied in `N_invalid`, never dropped.
- Programmatic grading runs alongside the judge wherever the answer is exact: every synthetic question
  (`extra.exact`), and on any folder the templates whose gold is a number, yes/no or an 'n by m' layout
  (Q8-10, Q12, Q14, Q15, Q17-19, Q11, Q18) and Number-in-Chart / Number-in-General reasoning. Its score is
  reported as a second column with its agreement with the judge, so a lenient or broken judge shows up.
- The model is asked to end with "Final answer: ..."; extraction takes the text after the last answer marker
  ("Final answer:", "Answer:", "the answer is", with or without a colon), else the last non-empty line. An
  extracted number is the one value the answer states: after the last '=' ("5 + 6 = 11" is 11), locators such
  as "row 2" ignored, two different numbers refused. Numbers accept notation variants (1.5e3, 10^-2, 1,500, %);
  texts compare after light normalisation (case, TeX markup, Greek names, quotes, a leading panel letter).
- Questions without a gold answer (the official test split) are reported as `N_ungraded`, not as wrong.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable

from skillweave.charts.charxiv import (
    ANSWER_TYPES,
    DESCRIPTIVE_TEMPLATES,
    NOT_APPLICABLE,
    QA_SOURCES,
    QID_TO_GROUP,
    SUBJECTS,
    ChartQuestion,
    subplot_bucket,
    year_label,
)
from skillweave.errors import ParseFailure

EXACT_ON_ANY_FOLDER = {8: "number", 9: "number", 10: "number", 12: "number", 14: "number", 15: "number",
                       17: "number", 19: "number", 11: "yesno", 18: "layout"}
_RUBRIC_METHOD = {"title": "text", "ocr": "text_or_number", "quant": "number", "bool": "yesno", "enum": "list",
                  "trend": "trend", "layout": "layout"}
_REASONING_METHOD = {1: "set", 2: "text", 3: "number", 4: "number"}
# "Final answer: x", "Answer: x", "The (final) answer is x" (with or without a colon), "Final answer\nx"
_MARKER = re.compile(r"(?:final\s+answer\s*(?:is\b)?\s*[:：]?|answer\s*(?:is\b)?\s*[:：]|\banswer\s+is\b)\s*",
                     re.IGNORECASE)
_NA_WORDS = {"not applicable", "n/a", "na", "none", "nan", "null", "nil", "not available"}
_CHART_PARTS = (r"(?:title|label|labels|legend|legends|colou?r\s*bar|colorbar|ticks?|tick\s+labels?|lines?|"
                r"axis|axes|x-axis|y-axis|subplot|subplots|grid|data|markers?|text)")
_NA_PHRASES = re.compile(
    r"not\s+applicable|\bn/a\b|\bno\s+(?:\w+\s+){0,2}" + _CHART_PARTS + r"\b|"
    r"\b(?:does|do|did)\s*(?:not|n't)\s+(?:have|contain|include|show|display)\b|\bthere\s+(?:is|are)\s+no\b|"
    r"\bcannot\s+be\s+determined\b|\bnot\s+(?:present|shown|visible|available)\b", re.IGNORECASE)
# "row 2", "column 1", "subplot 3", "2nd": locators that are not the answer
_LOCATOR = re.compile(r"\b(?:row|column|col|subplot|panel|plot|figure|fig\.?|chart|graph|axis)\s*#?\s*\d+\b"
                      r"|\b\d+\s*(?:st|nd|rd|th)\b", re.IGNORECASE)
# "... is 15", "are about 3", "equals 0.5": the number a sentence states as its value
_STATED = re.compile(r"\b(?:is|are|was|were|equals?|becomes?)\s+(?:about|approximately|around|roughly|exactly|"
                     r"nearly|almost|just|only)?\s*(?P<num>[-−]?\s*\d[\d,]*(?:\.\d+)?(?:\s*[eE]\s*[-+]?\d+)?)")
_SCI = re.compile(r"(\d(?:\.\d+)?)\s*(?:x|×|\*|\\times|\\cdot|·)\s*10\s*(?:\^|\*\*)\s*\{?\s*([-−+]?\d+)\s*\}?")
_GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "lambda": "λ", "mu": "μ",
          "sigma": "σ", "theta": "θ", "tau": "τ", "eta": "η", "rho": "ρ", "pi": "π", "omega": "ω", "phi": "φ"}


# ---- extraction and normalisation -------------------------------------------------------------------
def extract_final_answer(response: str | None) -> str:
    """The model's final answer: the first non-empty line after the last answer marker ("Final answer: x",
    "The answer is x", with or without a colon), else the last non-empty line."""
    text = (response or "").strip()
    if not text:
        return ""
    matches = list(_MARKER.finditer(text))
    answer = ""
    if matches:
        tail_lines = [line for line in text[matches[-1].end():].splitlines() if line.strip("*_`\"' .:")]
        answer = tail_lines[0] if tail_lines else ""
    if not answer.strip():
        answer = [line for line in text.splitlines() if line.strip()][-1]
    for _ in range(2):  # "**0.25**." -> "0.25"
        answer = answer.strip().strip("*_`\"' ").rstrip(".")
    return answer.strip()


def is_not_applicable(text: str) -> bool:
    """An answer that says the element does not exist ("Not Applicable", "There is no legend", "N/A",
    "The plot does not have a colorbar"). A plain "No" or "none of the lines cross" is not one."""
    t = re.sub(r"\s+", " ", (text or "").strip().strip("*_`\"' .").lower())
    if t in _NA_WORDS:
        return True
    if re.match(r"^(?:no|none)\b,?\s+(?:of\s+the\s+)?(?:lines?|curves?|series)\s+(?:intersect|cross|overlap)", t):
        return False
    return bool(_NA_PHRASES.search(t))


def _distinct_numbers(text: str) -> list[float]:
    values: list[float] = []
    for match in _NUM.finditer(text.replace("×", "x")):
        value = parse_number(match.group(0))
        if value is not None and not any(numbers_equal(value, v) for v in values):
            values.append(value)
    return values


def numbers_in(text: str) -> list[float]:
    """Every number in the text in order (scientific '4 x 10^-4' read as one), e.g. a gold list '30, 40'."""
    t = _SCI.sub(lambda m: f"{m.group(1)}e{m.group(2).replace('−', '-')}", str(text or ""))
    return [v for v in (parse_number(m.group(0)) for m in _NUM.finditer(t.replace("×", "x"))) if v is not None]


def answer_number(text: str | None) -> float | None:
    """The number an extracted answer states, or None when it states none or several.

    Unlike `parse_number` (the first number anywhere), this reads "5 + 6 = 11" as 11 (the value after the
    last '='), ignores locators ("row 2", "subplot 3", "2nd"), and refuses an answer holding two different
    numbers ("between 2 and 3") instead of guessing one of them, unless the sentence states which one it means:
    the number right after its last 'is' / 'are' / 'equals' ("the gap between 2010 and 2020 is 15"), or the
    one number before a colon that lists others ("5 labeled ticks: 0, 2, 4, 6, 8").
    """
    if text is None:
        return None
    t = str(text)
    if "=" in t:
        t = t.rsplit("=", 1)[1]
    t = _SCI.sub(lambda m: f"{m.group(1)}e{m.group(2).replace('−', '-')}", t)
    t = _LOCATOR.sub(" ", t)
    values = _distinct_numbers(t)
    if len(values) <= 1:
        return values[0] if values else None
    stated = list(_STATED.finditer(t))
    if stated:
        return parse_number(stated[-1].group("num"))
    head = t.split(":", 1)[0] if ":" in t else ""
    head_values = _distinct_numbers(head)
    return head_values[0] if len(head_values) == 1 else None


def normalise_text(text: str) -> str:
    t = (text or "").strip().strip("\"'`*").strip().lower()
    t = re.sub(r"\\(?:mathrm|text|mathbf|mathit|rm|bf)\s*", "", t)
    for name, letter in _GREEK.items():
        t = re.sub(rf"\\?\b{name}\b", letter, t)
    t = re.sub(r"^\(?[a-h]\)\s+", "", t)  # a leading panel letter: "(a) Title"
    t = re.sub(r"[\s$\\{}\"'`*]", "", t)
    return t.rstrip(".")


_NUM = re.compile(
    r"[-−–]?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*[eE]\s*[-+]?\d+)?(?:\s*(?:\^|\*\*)\s*\{?\s*[-−]?\d+\s*\}?)?"
    r"|[-−–]?\.\d+"
)


def parse_number(text: str | None) -> float | None:
    """The first number in the text; '10^-6', '1.5e3', '1,500', '−3' and '45%' are all understood."""
    if text is None:
        return None
    match = _NUM.search(str(text).replace("×", "x"))
    if not match:
        return None
    token = re.sub(r"\s+", "", match.group(0)).replace("−", "-").replace("–", "-").replace(",", "")
    try:
        if "^" in token or "**" in token:
            base, exponent = re.split(r"\^|\*\*", token, maxsplit=1)
            return float(base) ** float(exponent.strip("{}"))
        return float(token)
    except (ValueError, OverflowError):
        return None


def numbers_equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _trend_tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", (text or "").lower())
    out: list[str] = []
    for w in words:
        token = ("up" if re.match(r"(increas|rise|rising|rose|grow|climb|up$|upward|higher)", w) else
                 "down" if re.match(r"(decreas|fall|fell|drop|declin|down|decay|shrink|dip|sink|lower)", w) else
                 "flat" if re.match(r"(constant|stable|stabili|flat|plateau|steady|saturat)", w) else None)
        if token and (not out or out[-1] != token):
            out.append(token)
    return out


def _layout(text: str) -> tuple[int, int] | None:
    t = (text or "").lower()
    m = re.search(r"(\d+)\s*(?:by|x|×|\*)\s*(\d+)", t) or re.search(r"(\d+)\s*rows?\D+?(\d+)\s*col", t)
    return (int(m.group(1)), int(m.group(2))) if m else None


# ---- programmatic grading ---------------------------------------------------------------------------
def exact_method(q: ChartQuestion) -> str | None:
    """How this question's answer can be checked without a judge, or None when it needs one."""
    if q.answer is None:
        return None
    synthetic = bool(q.extra.get("exact"))
    if q.mode == "descriptive":
        if synthetic:
            return _RUBRIC_METHOD[DESCRIPTIVE_TEMPLATES[int(q.qid)]["rubric"]]
        return EXACT_ON_ANY_FOLDER.get(int(q.qid))
    if synthetic:
        return _REASONING_METHOD[int(q.inst_category)]
    return "number" if q.inst_category in (3, 4) else None


def compare(method: str, extracted: str, gold: str) -> int:
    """1 when the extracted answer matches the gold answer under `method`, else 0."""
    if gold.strip() == NOT_APPLICABLE:
        return int(is_not_applicable(extracted) and answer_number(extracted) is None)
    if method != "yesno" and is_not_applicable(extracted) and not is_not_applicable(gold):
        return 0
    if method == "text_or_number":
        method = "number" if parse_number(gold) is not None and re.fullmatch(r"[-−\d.,^e{} ]+", gold) else "text"
    if method == "number":
        gold_values = numbers_in(gold)
        if len(gold_values) > 1:  # a list of numbers ("30, 40"): the same numbers, in any order
            got = numbers_in(_LOCATOR.sub(" ", extracted.rsplit("=", 1)[-1]))
            return int(len(got) == len(gold_values) and all(
                numbers_equal(x, y) for x, y in zip(sorted(got), sorted(gold_values), strict=True)))
        a, b = answer_number(extracted), (gold_values[0] if gold_values else None)
        return int(a is not None and b is not None and numbers_equal(a, b))
    if method == "yesno":
        m = re.search(r"\b(yes|no)\b", extracted.lower())
        return int(bool(m) and m.group(1) == gold.strip().lower())
    if method == "layout":
        return int(_layout(extracted) is not None and _layout(extracted) == _layout(gold))
    if method == "trend":
        return int(bool(_trend_tokens(gold)) and _trend_tokens(extracted) == _trend_tokens(gold))
    if method == "list":
        return int([normalise_text(p) for p in extracted.split(",")] == [normalise_text(p) for p in gold.split(",")])
    if method == "set":
        return int(sorted(normalise_text(p) for p in extracted.split(",")) ==
                   sorted(normalise_text(p) for p in gold.split(",")))
    return int(normalise_text(extracted) == normalise_text(gold))


def programmatic_grade(q: ChartQuestion, response: str | None) -> dict | None:
    """{'score', 'extracted', 'method'} for questions with exact answers, else None."""
    method = exact_method(q)
    if method is None:
        return None
    extracted = extract_final_answer(response)
    return {"score": compare(method, extracted, q.answer), "extracted": extracted, "method": method}


# ---- judge replies ----------------------------------------------------------------------------------
def parse_json_reply(text: str | None) -> dict:
    """The JSON object in a judge reply (code fences and chatter around it are ignored)."""
    raw = (text or "").strip()
    raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw, flags=re.IGNORECASE)
    start = raw.find("{")
    if start < 0:
        raise ParseFailure(f"judge reply holds no JSON object: {raw[:80]!r}")
    end = raw.rfind("}")
    candidate = raw[start:end + 1] if end > start else raw[start:]
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise ParseFailure(f"judge reply is not valid JSON ({exc.msg}): {candidate[:80]!r}") from None
    if not isinstance(value, dict):
        raise ParseFailure("judge reply JSON is not an object")
    return value


def looks_truncated(text: str | None) -> bool:
    """A reply cut off mid-JSON (the judge ran out of tokens): retry with a larger budget."""
    raw = (text or "").strip()
    return raw.count("{") > raw.count("}") or raw.count('"') % 2 == 1


def _binary(value) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    raise ParseFailure(f"score {value!r} is not 0 or 1")


def parse_descriptive_judge(text: str | None, n: int) -> list[dict]:
    """`extract_answer_T{i}` / `score_T{i}` for i = 1..n, in order."""
    data = parse_json_reply(text)
    out = []
    for i in range(1, n + 1):
        if f"score_T{i}" not in data:
            raise ParseFailure(f"judge reply lacks score_T{i} (expected keys for T1..T{n})")
        out.append({"extracted": str(data.get(f"extract_answer_T{i}", "")), "score": _binary(data[f"score_T{i}"])})
    return out


def parse_reasoning_judge(text: str | None) -> dict:
    data = parse_json_reply(text)
    if "score" not in data:
        raise ParseFailure("judge reply lacks 'score'")
    extracted = data.get("extracted_answer", data.get("extract_answer", ""))
    return {"extracted": str(extracted), "score": _binary(data["score"])}


# ---- typed judge replies (agents/structured.py sends the schema and validates against it) -------------------
def _score_field():
    from pydantic import Field

    return Field(ge=0, le=1, description="1 when the response is correct, else 0")


def reasoning_judge_schema():
    """The reasoning judge's reply: `extracted_answer` (`extract_answer` accepted) and a 0/1 `score`."""
    from pydantic import BaseModel, ConfigDict, model_validator

    class ReasoningJudgeReply(BaseModel):
        model_config = ConfigDict(coerce_numbers_to_str=True)
        extracted_answer: str = ""
        score: int = _score_field()

        @model_validator(mode="before")
        @classmethod
        def _alias(cls, data):
            if isinstance(data, dict) and "extracted_answer" not in data and "extract_answer" in data:
                data = {**data, "extracted_answer": data["extract_answer"]}
            return data

    return ReasoningJudgeReply


def descriptive_judge_schema(n: int):
    """The descriptive judge's reply for a batch of n: `extract_answer_T{i}` and a 0/1 `score_T{i}`, i = 1..n."""
    from pydantic import ConfigDict, create_model

    fields = {}
    for i in range(1, n + 1):
        fields[f"extract_answer_T{i}"] = (str, "")
        fields[f"score_T{i}"] = (int, _score_field())
    return create_model(f"DescriptiveJudgeReply{n}", __config__=ConfigDict(coerce_numbers_to_str=True), **fields)


def reasoning_from_model(model, data=None) -> dict:
    return {"extracted": model.extracted_answer, "score": model.score}


def descriptive_from_model(model, data=None) -> list[dict]:
    n = len(type(model).model_fields) // 2
    return [{"extracted": getattr(model, f"extract_answer_T{i}"), "score": getattr(model, f"score_T{i}")}
            for i in range(1, n + 1)]


# ---- accuracy and breakdowns ------------------------------------------------------------------------
def _new_stats(mode: str) -> dict:
    stats: dict = {"Question Type": mode.capitalize(), "N": 0, "N_valid": 0, "N_invalid": 0, "N_ungraded": 0,
                   "Overall Score": [], "By Subject": defaultdict(list), "By Year": defaultdict(list),
                   "By Subplot": defaultdict(list)}
    if mode == "descriptive":
        stats |= {"By Category": defaultdict(list), "By Question": defaultdict(list)}
    else:
        stats |= {"By Answer Type": defaultdict(list), "By Source": defaultdict(list),
                  "By Skills": defaultdict(list)}
    return stats


def accuracy_stats(rows: Iterable[dict], score_field: str = "score") -> dict[str, dict]:
    """CharXiv-style stats per mode from rows holding the question fields and a score (-1, 0, 1 or None).

    Accuracy is 100 * mean with -1 counted as 0 (and tallied in N_invalid); rows whose score is None are
    ungraded (no gold answer, or no grader for them) and counted in N_ungraded only. Each breakdown cell
    is {'acc', 'n'}; the overall value carries a binomial 95% CI half-width.
    """
    by_mode: dict[str, dict] = {}
    for row in rows:
        mode = row["mode"]
        stats = by_mode.setdefault(mode, _new_stats(mode))
        stats["N"] += 1
        score = row.get(score_field)
        if score is None:
            stats["N_ungraded"] += 1
            continue
        if score not in (0, 1):
            stats["N_invalid"] += 1
            score = 0
        stats["N_valid"] += 1
        stats["Overall Score"].append(score)
        stats["By Subject"][SUBJECTS.get(row["subject"], row["subject"])].append(score)
        stats["By Year"][year_label(row["year"])].append(score)
        stats["By Subplot"][subplot_bucket(int(row["num_subplots"]))].append(score)
        if mode == "descriptive":
            stats["By Category"][QID_TO_GROUP[int(row["qid"])]].append(score)
            stats["By Question"][f"Q{int(row['qid'])}"].append(score)
        else:
            stats["By Answer Type"][ANSWER_TYPES[int(row["inst_category"])]].append(score)
            stats["By Source"][QA_SOURCES.get(row.get("qa_source"), str(row.get("qa_source")))].append(score)
            if row.get("skills"):
                stats["By Skills"][" + ".join(row["skills"])].append(score)
    return {mode: _finish(stats) for mode, stats in by_mode.items()}


def _acc(scores: list[int]) -> float | None:
    return round(100 * sum(scores) / len(scores), 2) if scores else None


def _natural(entry: tuple) -> tuple:
    """Q2 before Q10; years and buckets in numeric order."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(entry[0])))


def _finish(stats: dict) -> dict:
    out = {}
    for key, value in stats.items():
        if isinstance(value, defaultdict):
            out[key] = {k: {"acc": _acc(v), "n": len(v)} for k, v in sorted(value.items(), key=_natural)}
        elif key == "Overall Score":
            n = len(value)
            p = sum(value) / n if n else 0.0
            out[key] = _acc(value)
            out["CI95"] = round(100 * 1.96 * math.sqrt(p * (1 - p) / n), 2) if n else None
        else:
            out[key] = value
    if "By Skills" in out and not out["By Skills"]:
        del out["By Skills"]
    return out


def agreement(rows: Iterable[dict], a: str = "score", b: str = "programmatic") -> dict:
    """How often two graders agree on the rows both graded (invalid judge scores count as disagreement)."""
    pairs = [(r[a], r[b]) for r in rows if r.get(a) is not None and r.get(b) is not None]
    same = sum(x == y for x, y in pairs)
    return {"n": len(pairs), "agree": same, "rate": round(same / len(pairs), 4) if pairs else None}
