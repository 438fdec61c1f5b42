"""Prices, token estimates and run budgets: what a model call costs, and whether a run may start another.

Prices are USD per 1M tokens, input and output. A call's price comes from, in order:

1. the models file's entry for a named model (`price_input`, `price_output`),
2. the models file's `prices:` table, keyed by spec (`openai:gpt-4o`, `fake`, `anthropic:claude-3-5-haiku`),
3. the built-in table below (list prices as of `PRICES_DATE`; the model id or a dated snapshot of it).

A spec with no price has an unknown cost: stored as NULL and shown as `unknown`, never as 0.
"""

from __future__ import annotations

import math
import os
import stat
import threading
from dataclasses import dataclass
from functools import lru_cache

PRICES_DATE = "2025-06-01"

# (kind, model id) -> (USD per 1M input tokens, USD per 1M output tokens): providers' list prices on PRICES_DATE,
# standard (not batch, not cached-input) rates. A dated snapshot (`gpt-4o-mini-2024-07-18`) takes its base id's
# price; override any entry in the models file.
BUILTIN_PRICES: dict[tuple[str, str], tuple[float, float]] = {
    ("openai", "gpt-4o"): (2.50, 10.00),
    ("openai", "gpt-4o-mini"): (0.15, 0.60),
    ("openai", "gpt-4.1"): (2.00, 8.00),
    ("openai", "gpt-4.1-mini"): (0.40, 1.60),
    ("openai", "gpt-4.1-nano"): (0.10, 0.40),
    ("openai", "gpt-4-turbo"): (10.00, 30.00),
    ("openai", "gpt-4"): (30.00, 60.00),
    ("openai", "gpt-3.5-turbo"): (0.50, 1.50),
    ("openai", "o3-mini"): (1.10, 4.40),
    ("openai", "o4-mini"): (1.10, 4.40),
    ("anthropic", "claude-3-5-haiku"): (0.80, 4.00),
    ("anthropic", "claude-3-5-sonnet"): (3.00, 15.00),
    ("anthropic", "claude-3-7-sonnet"): (3.00, 15.00),
    ("anthropic", "claude-sonnet-4"): (3.00, 15.00),
    ("anthropic", "claude-opus-4"): (15.00, 75.00),
    ("anthropic", "claude-3-haiku"): (0.25, 1.25),
    ("anthropic", "claude-3-opus"): (15.00, 75.00),
}


@dataclass(frozen=True)
class Price:
    input: float   # USD per 1M input tokens
    output: float  # USD per 1M output tokens
    source: str    # "models file", "models file prices", "built-in 2025-06-01"

    def cost(self, input_tokens: int | None, output_tokens: int | None) -> float:
        return ((input_tokens or 0) * self.input + (output_tokens or 0) * self.output) / 1e6


def builtin_price(kind: str, model: str) -> tuple[float, float] | None:
    """The built-in price of a model id, or of the longest base id a dated snapshot extends
    (`gpt-4o-2024-08-06` -> `gpt-4o`, never `gpt-4o-mini` -> `gpt-4o`)."""
    if kind == "local":  # the embedded model runs on this machine: no price per token
        return (0.0, 0.0)
    if (kind, model) in BUILTIN_PRICES:
        return BUILTIN_PRICES[(kind, model)]
    best = None
    for (k, base), price in BUILTIN_PRICES.items():
        rest = model[len(base):]
        if k == kind and model.startswith(base + "-") and rest[1:2].isdigit() and (best is None or len(base) > best[0]):
            best = (len(base), price)
    return best[1] if best else None


_PRICE_CACHE: dict[tuple, Price | None] = {}


def _models_file_key() -> tuple:
    """The models file `model_config.models_path()` picks, with its mtime and size, found with plain `os` calls
    (every model call asks): $SKILLWEAVE_MODELS, else ./skillweave-models.yaml, else the user config file."""
    path = os.environ.get("SKILLWEAVE_MODELS")
    if not path:
        try:
            local = os.stat(LOCAL_MODELS_FILE)
            if stat.S_ISREG(local.st_mode):
                return (LOCAL_MODELS_FILE, local.st_mtime_ns, local.st_size)
        except OSError:
            pass
        path = _user_models_file(os.environ.get("XDG_CONFIG_HOME"), os.environ.get("HOME"))
    try:
        found = os.stat(path)
    except OSError:
        return (path, None)
    return (path, found.st_mtime_ns, found.st_size)


LOCAL_MODELS_FILE = "skillweave-models.yaml"


@lru_cache(maxsize=16)
def _user_models_file(xdg_config_home: str | None, home: str | None) -> str:
    from skillweave.providers.model_config import user_models_path

    return str(user_models_path())


def price_of(spec: str) -> Price | None:
    """The price of a model spec (a shorthand or a models-file name), or None when it is unknown. Looked up once
    per spec while the models file is unchanged (each model call asks)."""
    key = ((spec or "").strip(), _models_file_key())
    if key not in _PRICE_CACHE:
        if len(_PRICE_CACHE) > 1000:
            _PRICE_CACHE.clear()
        _PRICE_CACHE[key] = _lookup_price(key[0])
    return _PRICE_CACHE[key]


def _lookup_price(spec: str) -> Price | None:
    from skillweave.providers.model_config import find_model, load_price_table

    entry = find_model(spec)
    if entry is not None and entry.price_input is not None and entry.price_output is not None:
        return Price(entry.price_input, entry.price_output, "models file")
    table = load_price_table()
    if spec in table:
        return Price(table[spec].input, table[spec].output, "models file prices")
    kind, _, model = (entry.kind, "", entry.model) if entry is not None else spec.partition(":")
    found = builtin_price(kind, model)
    return Price(found[0], found[1], f"built-in {PRICES_DATE}") if found else None


def count_tokens(spec: str, text: str) -> int:
    """Tokens a text is billed as, estimated before a call: the fake provider bills words; for real models,
    about 4 characters a token (English prose; exact counts come back with each reply)."""
    if spec.split(":", 1)[0] == "fake" or _kind_of(spec) == "fake":
        return len(text.split())
    return math.ceil(len(text) / 4)


def _kind_of(spec: str) -> str | None:
    from skillweave.providers.model_config import find_model

    entry = find_model(spec)
    return entry.kind if entry is not None else None


def messages_text(messages: list[dict]) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        else:
            out.extend(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return out


def estimate_input_tokens(spec: str, messages: list[dict]) -> int:
    return sum(count_tokens(spec, t) for t in messages_text(messages))


class BudgetExceeded(Exception):
    """The next model call could exceed the run's --max-cost; the run stops starting calls, resumable."""


class Budget:
    """A run's spending limit. Before each call, the call's most expensive outcome (its prompt plus max_tokens
    for each of its n replies) is reserved; a call whose reservation would take spent + reserved above the limit
    is not started. When the call returns, the reservation is replaced by what it cost. Spend therefore never
    passes the limit, and calls already in flight finish and are stored."""

    def __init__(self, limit: float, spent: float = 0.0):
        self.limit = float(limit)
        self.spent = float(spent)
        self.reserved = 0.0
        self.stopped: str | None = None  # the reason, once a call was refused
        self._lock = threading.Lock()

    def reserve(self, spec: str, messages: list[dict], max_tokens: int, n: int) -> float:
        price = price_of(spec)
        if price is None:
            return self._stop(f"no price for '{spec}', so --max-cost cannot be kept; add price_input/price_output "
                              f"for it in the models file")
        worst = price.cost(estimate_input_tokens(spec, messages), max_tokens * max(n, 1))
        with self._lock:
            if self.stopped is None and self.spent + self.reserved + worst <= self.limit + 1e-12:
                self.reserved += worst
                return worst
        return self._stop(f"budget ${self.limit:.4f} reached: spent ${self.spent:.4f} (+${self.reserved:.4f} in "
                          f"flight), the next call could cost up to ${worst:.4f}")

    def _stop(self, reason: str):
        with self._lock:
            self.stopped = self.stopped or reason
        raise BudgetExceeded(self.stopped)

    def settle(self, reserved: float, cost: float | None) -> None:
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += cost or 0.0  # a failed call has no token counts and is not billed
