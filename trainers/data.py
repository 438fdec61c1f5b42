"""Readers for training data in the export shapes: SFT examples and preference pairs, from JSONL or the store.

Design choices
- Two small record types, `SFTExample(instruction, response, input, item_id)` and
  `PreferencePair(prompt, chosen, rejected, item_id)`, so trainers never branch on file shapes.
- Accepted SFT shapes (one JSON object per line, or a JSON list such as an Alpaca export):
  `prompt/completion`, `messages` (the last assistant turn is the response, the last user turn before it the
  instruction; system turns are dropped because the *template* owns the system prompt, per PTST),
  Alpaca `instruction/input/output`, and `text` is rejected (no prompt/response boundary to mask).
- Preference shapes: `prompt/chosen/rejected` with strings or TRL-style conversational message lists;
  SORRY-Bench `query/chosen/rejected`; AlpacaFarm `instruction/input/output_1/output_2/preference`.
- Every row may carry `item_id`; it is kept so scores and selections link back to store items. Rows without one get
  a content hash, so ids are stable across runs.
- Store-side pairs: an item whose payload holds `prompt`, `responses` (two strings) and `preferred` (0, 1 or
  "tie"); ties are broken with a seeded coin per pair (the upstream CHES code always picked the second response).
Used by the SFT, DPO, CHES and LESS trainers; signatures stay simple on purpose.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skillweave.errors import UsageError
from skillweave.store import stable_id


@dataclass(frozen=True)
class SFTExample:
    instruction: str
    response: str
    input: str = ""
    item_id: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    item_id: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a JSONL file (one object per line) or a JSON file holding a list of objects."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"data file '{path}' does not exist")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f"'{path}' is not valid JSON: {exc}") from None
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise UsageError(f"'{path}' line {number} is not valid JSON: {exc}") from None
    if not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"'{path}' must hold JSON objects (one per line, or a list of objects)")
    return rows


def _content(value: Any) -> str:
    """A string, or the content of the last message in a conversational list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        return str(value[-1]["content"])
    raise UsageError(f"expected a string or a list of messages, got {value!r:.80}")


def sft_example(row: dict[str, Any]) -> SFTExample:
    """One SFT example from any supported export shape."""
    item_id = str(row.get("item_id") or "")
    if "messages" in row:
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise UsageError("a `messages` row must end with an assistant message (the response to learn)")
        users = [m for m in messages[:-1] if m.get("role") == "user"]
        if not users:
            raise UsageError("a `messages` row needs a user message before the final assistant message")
        instruction, response, extra = str(users[-1]["content"]), str(messages[-1]["content"]), ""
    elif "instruction" in row and "output" in row:
        instruction, response, extra = str(row["instruction"]), str(row["output"]), str(row.get("input") or "")
    elif "prompt" in row and "completion" in row:
        instruction, response, extra = _content(row["prompt"]), _content(row["completion"]), ""
    else:
        raise UsageError(
            f"unrecognised SFT row with keys {sorted(row)}; expected prompt/completion, messages, or Alpaca "
            "instruction/input/output"
        )
    return SFTExample(instruction, response, extra, item_id or stable_id("sft", instruction, extra, response))


def load_sft_examples(path: str | Path) -> list[SFTExample]:
    """SFT examples from a JSONL/JSON export file."""
    examples = [sft_example(r) for r in read_records(path)]
    if not examples:
        raise UsageError(f"'{path}' holds no examples")
    return examples


def _alpacafarm_pair(row: dict[str, Any]) -> tuple[str, str, str]:
    """AlpacaFarm human preference row: the prompt is `instruction`, plus a newline and `input` when the input
    is non-empty (how the CHES release builds its query); `preference` 1 prefers `output_1`, 2 `output_2`."""
    preference = row["preference"]
    if preference not in (1, 2) or isinstance(preference, bool):
        raise UsageError(f"AlpacaFarm row has preference {preference!r}; expected 1 (output_1 preferred) or 2")
    instruction, extra = str(row.get("instruction") or ""), str(row.get("input") or "")
    prompt = f"{instruction}\n{extra}" if extra else instruction
    first, second = str(row["output_1"]), str(row["output_2"])
    return (prompt, first, second) if preference == 1 else (prompt, second, first)


def preference_pair(row: dict[str, Any]) -> PreferencePair:
    """One pair from any accepted preference shape.

    - `prompt/chosen/rejected` (strings or TRL-style conversational lists);
    - SORRY-Bench preference files as the CHES release writes them: `query/chosen/rejected` strings;
    - AlpacaFarm human preferences: `instruction`, `input`, `output_1`, `output_2`, `preference` (1 or 2).
    """
    if "prompt" in row:
        shape, keys = "prompt/chosen/rejected", ("prompt", "chosen", "rejected")
    elif "query" in row:
        shape, keys = "SORRY-Bench query/chosen/rejected", ("query", "chosen", "rejected")
    elif "output_1" in row or "output_2" in row or "preference" in row:
        shape, keys = "AlpacaFarm", ("instruction", "output_1", "output_2", "preference")
    else:
        raise UsageError(
            f"unrecognised preference row with keys {sorted(row)}; expected prompt/chosen/rejected, SORRY-Bench "
            "query/chosen/rejected, or AlpacaFarm instruction/input/output_1/output_2/preference"
        )
    missing = [k for k in keys if k not in row]
    if missing:
        raise UsageError(f"{shape} preference row lacks {missing}; expected keys {', '.join(keys)} (and item_id)")
    if shape == "AlpacaFarm":
        prompt, chosen, rejected = _alpacafarm_pair(row)
    else:
        prompt = row[keys[0]]
        if isinstance(prompt, list):
            users = [m for m in prompt if m.get("role") == "user"]
            prompt = users[-1]["content"] if users else _content(prompt)
        chosen, rejected = _content(row["chosen"]), _content(row["rejected"])
    item_id = str(row.get("item_id") or "") or stable_id("pair", prompt, chosen, rejected)
    return PreferencePair(str(prompt), chosen, rejected, item_id)


def load_preference_pairs(path: str | Path) -> list[PreferencePair]:
    """Preference pairs from a JSONL/JSON file in any shape `preference_pair` accepts."""
    pairs = [preference_pair(r) for r in read_records(path)]
    if not pairs:
        raise UsageError(f"'{path}' holds no preference pairs")
    return pairs


def pair_from_payload(item_id: str, payload: dict[str, Any], seed: int = 0) -> PreferencePair | None:
    """A pair from a store item payload {prompt, responses: [a, b], preferred: 0 | 1 | "tie"}; None if incomplete."""
    responses = payload.get("responses")
    if not isinstance(responses, list) or len(responses) != 2 or "prompt" not in payload:
        return None
    preferred = payload.get("preferred")
    if preferred == "tie" or preferred is None and payload.get("tie"):
        preferred = random.Random(f"{seed}:{item_id}").randint(0, 1)  # a fair, reproducible coin per pair
    if preferred not in (0, 1):
        return None
    return PreferencePair(str(payload["prompt"]), str(responses[preferred]), str(responses[1 - preferred]), item_id)


def load_store_pairs(store: Any, run_id: str | None = None, kind: str = "preference", seed: int = 0
                     ) -> list[PreferencePair]:
    """Preference pairs from store items of `kind` (optionally one run); items without a usable preference are skipped."""
    pairs = [p for item in store.items(run_id, kind=kind)
             if (p := pair_from_payload(item["id"], item["payload"], seed)) is not None]
    if not pairs:
        raise UsageError(f"no items of kind '{kind}'{f' in run {run_id}' if run_id else ''} carry two responses "
                         "and a preference; import a prompt/chosen/rejected JSONL with --data instead")
    return pairs


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def encode_prompt_response(tokenizer: Any, prompt_text: str, response: str, *, add_special_tokens: bool,
                           max_length: int | None = None) -> tuple[list[int], int] | None:
    """Token ids of prompt + response + EOS and the prompt length; None when truncation leaves no response token.

    Prompt and response are tokenized separately so the response mask never depends on merges across the
    boundary; truncation keeps the start (the prompt) and is reported by the caller, never silent.
    """
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=add_special_tokens)["input_ids"])
    response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    ids = prompt_ids + response_ids
    if max_length is not None and len(ids) > max_length:
        ids = ids[:max_length]
    if len(ids) <= len(prompt_ids):
        return None
    return ids, len(prompt_ids)
