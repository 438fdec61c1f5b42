"""`replay:` model specs: answer each request from recorded replies instead of calling a model.

Sources
- `replay:store=PATH` (or `replay:PATH` naming a file): the successful calls in a skillweave store, any earlier
  run; add `,run=RUN_ID` to use one run's calls only.
- `replay:skillmix=DIR` (or `replay:DIR` naming a folder): the official Skill-Mix output layout
  (LeoYu/skill-mix): `<k.._s.._v.._r..>/<student>/records.csv` and `conv/*.json` (the student conversations) and
  `graded/by_<grader>_on_text_1_<r>_<prompt>/records.csv` (the grader's replies); add `,student=NAME` and
  `,grader=NAME` to read one student's and one grader's folders only (several students answered the same
  prompts: `student=` is required when a folder holds several, or their replies would take turns). Row i of each `graded/` folder of a student
  folder is one sample of the call that graded its generation row i: a request with `n` > 1 gets them in
  folder order.

Matching is by the request's conversation: the sequence of user and assistant messages (roles mapped to
user/assistant, each content with surrounding whitespace stripped, and the hash of each image it carries, so
the same question about two charts is two conversations). System messages are not part of the
match (the official conversations carry each chat template's own default system prompt), nor are
temperature, max_tokens or model. When one conversation has several recordings (generation rounds r1, r2,
... of the same prompt, read in folder order), successive requests for it get them in turn, each once; which
round gets which reply follows the order the requests arrive in (per-combination metrics that take the best or
the mean over rounds do not depend on it). A request with no recording, with fewer recorded replies than it
asks for, or after every recording of its conversation was used, fails with the reason (recorded like any
failed model call); no reply is ever made up or handed out twice. The handing-out state lives in the process:
a run resumed in a new process starts again from each conversation's first recording.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import re
import sqlite3
import sys
from pathlib import Path

from skillweave.errors import ConfigError, ModelCallError
from skillweave.providers.core import ChatRequest, ChatResult, Provider, RetryPolicy, message_text
from skillweave.store import stable_id

_GRADED_DIR = re.compile(r"^by_(?P<grader>.+)_on_text_1_(?P<gradround>\d+)_(?P<gradprompt>.+)$")
_TURN_COLUMN = re.compile(r"^(?P<role>.+)_(?P<turn>\d+)$")
_NOT_ROLES = {"model_input", "text", "score", "score_extracted", "points", "num_sentences_manual_in_student_answer",
              "true_sentence_lim_pt", "num_sentences_extracted_eq_num_sentences_model"}
SPEC_FORMS = "replay:store=FILE[,run=RUN], replay:skillmix=DIR[,student=NAME][,grader=NAME], or replay:PATH"


def parse_replay_spec(spec: str) -> dict:
    """'store=a.db,run=r1' -> {'store': 'a.db', 'run': 'r1'}; a bare path picks store (file) or skillmix (dir)."""
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"empty replay spec; expected {SPEC_FORMS}")
    options: dict = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            if "source" in options or "store" in options or "skillmix" in options:
                raise ConfigError(f"replay spec '{spec}' names more than one source; expected {SPEC_FORMS}")
            path = Path(key).expanduser()
            kind = "skillmix" if path.is_dir() else "store"
            options[kind] = key
            continue
        if key not in ("store", "skillmix", "run", "student", "grader") or not value:
            raise ConfigError(f"replay spec '{spec}': unknown or empty '{key}'; expected {SPEC_FORMS}")
        options[key] = value
    sources = [k for k in ("store", "skillmix") if k in options]
    if len(sources) != 1:
        raise ConfigError(f"replay spec '{spec}' needs exactly one source; expected {SPEC_FORMS}")
    path = Path(options[sources[0]]).expanduser()
    if sources[0] == "store" and not path.is_file():
        raise ConfigError(f"replay store '{path}' is not a file")
    if sources[0] == "skillmix" and not path.is_dir():
        raise ConfigError(f"replay folder '{path}' is not a folder")
    if "run" in options and sources[0] != "store" or sources[0] != "skillmix" and ({"student", "grader"} & set(options)):
        raise ConfigError(f"replay spec '{spec}': run= goes with store=, student= and grader= with skillmix=")
    if sources[0] == "skillmix":
        students = _students(path)
        if "student" not in options and len(students) > 1:  # their replies to the same prompts would mix
            raise ConfigError(f"replay folder '{path}' holds the outputs of {len(students)} students "
                              f"({', '.join(students)}); add student=NAME to the spec")
        if "student" in options and students and options["student"] not in students:
            raise ConfigError(f"replay folder '{path}' holds no student '{options['student']}' "
                              f"(it holds: {', '.join(students)})")
    return options


@functools.lru_cache(maxsize=32)
def _students(root: Path) -> tuple[str, ...]:
    """The student folder names of an official Skill-Mix output folder (`<k.._s.._v.._r..>/<student>`); read
    once per process (the spec is checked on every call)."""
    names = {_owner(p).name for p in [*root.rglob("records.csv"), *root.rglob("conv/*.json")]}
    return tuple(sorted(names))


def _images(message: dict) -> list[str]:
    """The identity of each image part: the hash the store records for it (`sha`), computed from `data` when
    the part still holds its bytes, so a live request and its stored copy agree."""
    parts = message.get("content") if isinstance(message.get("content"), list) else []
    return [p.get("sha") or stable_id(p.get("data")) for p in parts if p.get("type") == "image"]


def _newlines(text: str) -> str:
    """Line endings as a text-mode read gives them: upstream's grader reads the student's text back from
    records.csv in text mode, so a reply's '\r\n' reaches the grading prompt as '\n'."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def conversation_key(messages: list[dict]) -> str:
    """The match key of a request: its user/assistant turns, in order, stripped, line endings as '\n' (and the
    images each carries); system messages left out."""
    turns = [(m["role"], _newlines(message_text(m)).strip(), _images(m)) for m in messages
             if m.get("role") in ("user", "assistant")]
    return hashlib.blake2b(json.dumps(turns, ensure_ascii=False).encode(), digest_size=16).hexdigest()


class Recordings:
    """Recorded replies by conversation key: each key holds recordings, each a list of reply texts (the samples
    of one recorded call). Each recording answers one request: successive requests for the same conversation
    get its recordings in the order they were added, and a request after the last one fails."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[list[str]]] = {}
        self._used: dict[str, set[int]] = {}
        self.sources = 0

    def add(self, messages: list[dict], texts: list[str]) -> None:
        """One recording: the reply texts of one recorded call."""
        self.by_key.setdefault(conversation_key(messages), []).append(list(texts))
        self.sources += 1

    def answer(self, messages: list[dict], n: int) -> list[str]:
        key = conversation_key(messages)
        recs = self.by_key.get(key)
        if not recs:
            last = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
            raise ModelCallError(f"replay: no recorded reply for this conversation ({len(messages)} messages; "
                                 f"last user message starts {last.strip()[:60]!r})")
        usable = [i for i, texts in enumerate(recs) if len(texts) >= n]
        if not usable:
            raise ModelCallError(f"replay: the request asks for {n} replies but at most {max(map(len, recs))} "
                                 "are recorded for this conversation")
        used = self._used.setdefault(key, set())
        fresh = [i for i in usable if i not in used]
        if not fresh:
            raise ModelCallError(f"replay: all {len(usable)} recording(s) of this conversation were used by earlier "
                                 "requests (more requests than recorded calls, e.g. more rounds than recorded)")
        used.add(fresh[0])
        return recs[fresh[0]][:n]


def load_store(path: str | Path, run: str | None = None) -> Recordings:
    """Every successful call in a skillweave store (read-only), optionally one run's."""
    recordings = Recordings()
    uri = f"file:{Path(path).expanduser().resolve()}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
        sql = "SELECT request, response FROM llm_calls WHERE error IS NULL AND response IS NOT NULL"
        rows = con.execute(sql + (" AND run_id = ?" if run else "") + " ORDER BY created_at", [run] if run else [])
        rows = rows.fetchall()
        con.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"replay store '{path}' cannot be read as a skillweave store: {exc}") from None
    for request, response in rows:
        try:
            messages, texts = json.loads(request)["messages"], json.loads(response)
        except (ValueError, KeyError, TypeError):
            continue
        recordings.add(messages, texts if isinstance(texts, list) else [texts])
    if not recordings.by_key:
        raise ConfigError(f"replay store '{path}' holds no successful model calls" + (f" for run {run}" if run else ""))
    return recordings


def _roles(fieldnames: list[str]) -> tuple[str, str] | None:
    """The two chat roles of an official records.csv, from its '<role>_<turn>' columns in column order."""
    roles: list[str] = []
    for name in fieldnames:
        m = _TURN_COLUMN.match(name or "")
        if m and m["role"] not in _NOT_ROLES and m["role"] not in roles:
            roles.append(m["role"])
    return (roles[0], roles[1]) if len(roles) >= 2 else None


def _conversation_turns(turns: list[tuple[str, str]]) -> list[tuple[list[dict], str]]:
    """[(user_i, assistant_i)] -> one (request messages, reply) per turn, each with the turns before it."""
    out, history = [], []
    for user, reply in turns:
        messages = [*history, {"role": "user", "content": user}]
        out.append((messages, reply))
        history = [*messages, {"role": "assistant", "content": reply}]
    return out


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _record_turns(fieldnames: list[str], row: dict) -> list[tuple[str, str]]:
    roles = _roles(fieldnames)
    if not roles:
        return []
    turns, i = [], 0
    while f"{roles[0]}_{i}" in row and row.get(f"{roles[1]}_{i}") not in (None, ""):
        turns.append((row[f"{roles[0]}_{i}"], row[f"{roles[1]}_{i}"]))
        i += 1
    return turns


def _owner(path: Path) -> Path:
    """The student folder (`<k.._s.._v.._r..>/<student>`) a records.csv or conv/*.json belongs to."""
    if path.parent.parent.name == "graded":
        return path.parent.parent.parent
    return path.parent.parent if path.parent.name == "conv" else path.parent


def load_skillmix(root: str | Path, grader: str | None = None, student: str | None = None) -> Recordings:
    """Student conversations (records.csv, conv/*.json) and grader replies (graded/*/records.csv), optionally
    of one student (its `<k.._s.._v.._r..>/<student>/` folders) and one grader.

    Each student folder (one generation round) is read on its own, in sorted order: every records.csv row is
    one recorded call per turn (a conv/*.json adds only turns its folder's records.csv lacks), and row i of
    every graded folder is one sample of the call that graded generation row i. So a conversation asked in
    several rounds (the same prompt, or the same text graded twice) has one recording per round, never merged.
    """
    root = Path(root).expanduser()
    recordings = Recordings()
    files: dict[Path, list[Path]] = {}
    for path in [*root.rglob("records.csv"), *root.rglob("conv/*.json")]:
        owner = _owner(path)
        if path.parent.parent.name != "graded" and "graded" in path.relative_to(root).parts:
            continue  # not at graded/<folder>/records.csv: not the official layout
        if student is None or owner.name == student:
            files.setdefault(owner, []).append(path)
    for owner in sorted(files):
        seen: set[tuple[str, str]] = set()  # turns from records.csv; conv/*.json repeats them
        grades: dict[tuple[int, str], tuple[list[dict], list[str]]] = {}
        for path in sorted(files[owner]):
            if path.suffix == ".json":
                continue
            fieldnames, rows = _read_rows(path)
            if path.parent == owner:
                for row in rows:
                    for messages, reply in _conversation_turns(_record_turns(fieldnames, row)):
                        seen.add((conversation_key(messages), reply))
                        recordings.add(messages, [reply])
                continue
            m = _GRADED_DIR.match(path.parent.name)
            if not m or (grader is not None and m["grader"] != grader):
                continue
            for i, row in enumerate(rows):
                for messages, reply in _conversation_turns(_record_turns(fieldnames, row)):
                    grades.setdefault((i, conversation_key(messages)), (messages, []))[1].append(reply)
        for messages, samples in grades.values():
            recordings.add(messages, samples)
        for path in sorted(p for p in files[owner] if p.suffix == ".json"):
            try:
                conv = json.loads(path.read_text(encoding="utf-8"))["conv"]
                turns = [tuple(turn.values())[:2] for turn in conv]
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if not all(len(t) == 2 and all(isinstance(x, str) for x in t) for t in turns):
                continue
            for messages, reply in _conversation_turns([(u, a) for u, a in turns]):
                if (conversation_key(messages), reply) not in seen:
                    seen.add((conversation_key(messages), reply))
                    recordings.add(messages, [reply])
    if not recordings.by_key:
        raise ConfigError(f"replay folder '{root}' holds no Skill-Mix records.csv or conv/*.json replies"
                          + (f" for grader '{grader}'" if grader else ""))
    return recordings


class ReplayProvider(Provider):
    """Answers from recordings, loaded once on first use; never retries (a missing recording stays missing)."""

    provider = "replay"

    def __init__(self, model: str, **kw):
        kw.setdefault("retry", RetryPolicy(max_attempts=1, timeout=None))
        super().__init__(model, **kw)
        self.options = parse_replay_spec(model)
        self._recordings: Recordings | None = None

    @property
    def recordings(self) -> Recordings:
        if self._recordings is None:
            if "store" in self.options:
                self._recordings = load_store(self.options["store"], self.options.get("run"))
            else:
                self._recordings = load_skillmix(self.options["skillmix"], self.options.get("grader"),
                                                 self.options.get("student"))
        return self._recordings

    async def _chat(self, request: ChatRequest) -> ChatResult:
        try:
            texts = self.recordings.answer(request.messages, request.n)
        except ConfigError as exc:  # an unreadable source fails each call with its reason
            raise ModelCallError(f"{self.spec}: {exc}") from None
        except ModelCallError as exc:
            raise ModelCallError(f"{self.spec}: {exc}") from None
        return ChatResult(texts=texts)


def make_provider(kind: str, model: str, *, max_concurrency: int = 64) -> ReplayProvider:
    """The `replay:` kind's factory (named in `providers.core.MODULE_KINDS`)."""
    return ReplayProvider(model, max_concurrency=max_concurrency)
