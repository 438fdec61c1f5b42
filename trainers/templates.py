"""PTST prompt-template registry: wrapper (text | chat | model) x content (vanilla, alpaca, safety prompts).

Design choices
- PTST (Pure Tuning, Safe Testing) needs the template to be a first-class, named, hashed object so a
  trainer can tune with one (`train_template`) and evaluate with another (`eval_template`), and every checkpoint and
  evaluation records both the name and a content hash of the exact strings used.
- Registry names: text:vanilla, text:alpaca, chat:vanilla, chat:alpaca, chat:llama,
  chat:llama-short, chat:mpt; plus `model` (the tokenizer's own chat template) and `model:safe` (the tokenizer's chat
  template with the short safety system prompt), so the default embedded model can be tuned in its native format.
- `chat:*` uses Llama-2 user-turn markers (`[INST] ... [/INST]`, system block `<<SYS>>...<</SYS>>` inside the first
  turn). The markers are format, not prose.
- The system-prompt texts shipped here are our own short paraphrases (no vendor text is reproduced). Users who hold
  local copies of the vendors' materials point `load_system_prompts(path)` (CLI `--system-prompts FILE.json`) at a
  JSON object {"llama": "...", "llama-short": "...", "mpt": "...", "alpaca": "..."}; the hash follows the text.
- The rendered prompt ends exactly where the response starts; `render_example` appends the response and EOS.
  Prompt and response are tokenized separately by the trainers, so the loss mask never depends on how a tokenizer
  merges across the boundary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillweave.errors import ConfigError

# Our own wording; replace through load_system_prompts() with local copies of the vendors' texts if needed.
DEFAULT_SYSTEM_PROMPTS: dict[str, str] = {
    "alpaca": "The following is an instruction describing a task. Write a response that completes it appropriately.",
    "llama": (
        "You are a helpful, honest and careful assistant. Answer as helpfully as you can while staying safe. "
        "Never give content that is harmful, unethical, dangerous, illegal, hateful or toxic, and keep answers "
        "free of bias. If a question is unclear or makes no sense, explain why instead of answering something "
        "wrong. If you do not know an answer, say so instead of making one up."
    ),
    "llama-short": "You are a helpful assistant. Be safe: refuse requests that could cause harm.",
    "mpt": (
        "You are a helpful assistant. You answer questions accurately and you decline to help with anything "
        "harmful, dangerous or illegal."
    ),
}

# The seven PTST styles, as the official release (vfleaking/PTST `prompt_utils.py`) lays them out: with its system
# prompts loaded through load_system_prompts(), render_prompt() gives its strings byte for byte
# (tests/test_ptst_official.py). Only the layout is here; the system-prompt texts above are our own.
_TEXT_FORMS: dict[str, str] = {
    "vanilla": "Question: {instruction}\nAnswer:",
    "alpaca": "{system}\n\n### Instruction:\n{instruction}\n\n### Response:\n",
}
_CHAT_USER_FORMS: dict[str, str] = {
    "vanilla": "Question: {instruction}",
    "alpaca": "### Instruction:\n{instruction}\n\n### Response:\n",
    "llama": "Question: {instruction}",
    "llama-short": "Question: {instruction}",
    "mpt": "Question: {instruction}",
}
CHAT_SYSTEM_BLOCK = "<<SYS>>\n{system}\n<</SYS>>\n\n"
CHAT_TURN = "[INST] {system_block}{user} [/INST]"


@dataclass(frozen=True)
class PromptTemplate:
    """One registry entry. `render_prompt` gives the text up to where the response begins."""

    name: str
    wrapper: str  # "text" | "chat" | "model"
    content: str  # "vanilla" | "alpaca" | "llama" | "llama-short" | "mpt"
    system: str | None = None
    description: str = ""
    chat_template: str | None = field(default=None, compare=False)  # only for wrapper "model", from the tokenizer

    @property
    def uses_tokenizer_chat_template(self) -> bool:
        return self.wrapper == "model"

    def bind(self, tokenizer: Any) -> PromptTemplate:
        """Attach the tokenizer's chat template (wrapper 'model'); other wrappers are tokenizer-independent."""
        if self.wrapper != "model":
            return self
        chat_template = getattr(tokenizer, "chat_template", None)
        if not chat_template:
            raise ConfigError(
                f"template '{self.name}' needs a tokenizer with a chat template; this tokenizer has none. "
                "Use text:vanilla, text:alpaca or a chat:* template instead"
            )
        return PromptTemplate(self.name, self.wrapper, self.content, self.system, self.description, chat_template)

    def spec(self) -> dict[str, Any]:
        """Everything that determines the rendered strings (hashed into `version`)."""
        if self.wrapper == "text":
            forms = {"text": _TEXT_FORMS[self.content if self.content == "alpaca" else "vanilla"]}
        elif self.wrapper == "chat":
            forms = {"turn": CHAT_TURN, "system_block": CHAT_SYSTEM_BLOCK, "user": _CHAT_USER_FORMS[self.content]}
        else:
            forms = {"chat_template": self.chat_template}
        return {"name": self.name, "wrapper": self.wrapper, "content": self.content, "system": self.system,
                "forms": forms}

    @property
    def version(self) -> str:
        """Content hash `b2:<hex>` of the exact strings (changes when a system prompt text changes)."""
        text = json.dumps(self.spec(), sort_keys=True, ensure_ascii=False)
        return "b2:" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

    def render_prompt(self, instruction: str, input: str = "", tokenizer: Any = None) -> str:
        """The prompt string for one instruction (Alpaca `input`, when non-empty, follows the instruction)."""
        instruction = f"{instruction}\n\n{input}" if input else instruction
        if self.wrapper == "text":
            form = _TEXT_FORMS[self.content if self.content == "alpaca" else "vanilla"]
            return form.format(instruction=instruction, system=self.system or "")
        if self.wrapper == "chat":
            block = CHAT_SYSTEM_BLOCK.format(system=self.system) if self.system else ""
            user = _CHAT_USER_FORMS[self.content].format(instruction=instruction)
            return CHAT_TURN.format(system_block=block, user=user)
        if tokenizer is None:
            raise ConfigError(f"template '{self.name}' renders with a tokenizer's chat template; pass the tokenizer")
        bound = self if self.chat_template else self.bind(tokenizer)
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": instruction}
        ]
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=bound.chat_template
        )

    def render_example(self, instruction: str, response: str, input: str = "", tokenizer: Any = None) -> str:
        """Prompt + response + EOS as one string (for inspection; trainers tokenize the two parts separately)."""
        eos = getattr(tokenizer, "eos_token", None) or ""
        return self.render_prompt(instruction, input, tokenizer) + response + eos

    def record(self) -> dict[str, str]:
        """What checkpoints and evaluations store: name + hash."""
        return {"name": self.name, "version": self.version}


def _registry(system_prompts: dict[str, str]) -> dict[str, PromptTemplate]:
    sp = system_prompts
    return {
        "text:vanilla": PromptTemplate("text:vanilla", "text", "vanilla", None, "plain question/answer string"),
        "text:alpaca": PromptTemplate("text:alpaca", "text", "alpaca", sp["alpaca"], "Alpaca preamble + headers"),
        "chat:vanilla": PromptTemplate("chat:vanilla", "chat", "vanilla", None, "chat turn, no system prompt"),
        "chat:alpaca": PromptTemplate("chat:alpaca", "chat", "alpaca", sp["alpaca"], "chat turn, Alpaca preamble"),
        "chat:llama": PromptTemplate("chat:llama", "chat", "llama", sp["llama"], "chat turn, long safety prompt"),
        "chat:llama-short": PromptTemplate("chat:llama-short", "chat", "llama-short", sp["llama-short"],
                                           "chat turn, short safety prompt"),
        "chat:mpt": PromptTemplate("chat:mpt", "chat", "mpt", sp["mpt"], "chat turn, MPT-style system prompt"),
        "model": PromptTemplate("model", "model", "vanilla", None, "the tokenizer's own chat template"),
        "model:safe": PromptTemplate("model:safe", "model", "llama-short", sp["llama-short"],
                                     "the tokenizer's chat template + short safety system prompt"),
    }


_system_prompts: dict[str, str] = dict(DEFAULT_SYSTEM_PROMPTS)
TEMPLATE_NAMES: tuple[str, ...] = tuple(_registry(DEFAULT_SYSTEM_PROMPTS))


def load_system_prompts(path: str | Path | None) -> dict[str, str]:
    """Replace system-prompt texts from a JSON file {"llama": ..., ...}; None restores the defaults."""
    global _system_prompts
    if path is None:
        _system_prompts = dict(DEFAULT_SYSTEM_PROMPTS)
        return _system_prompts
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read system prompts from '{path}': {exc}") from None
    unknown = set(overrides) - set(DEFAULT_SYSTEM_PROMPTS)
    if not isinstance(overrides, dict) or unknown:
        raise ConfigError(f"system prompts file '{path}' has unknown keys {sorted(unknown)}; "
                          f"expected some of {sorted(DEFAULT_SYSTEM_PROMPTS)}")
    _system_prompts = {**DEFAULT_SYSTEM_PROMPTS, **overrides}
    return _system_prompts


def get_template(name: str) -> PromptTemplate:
    """A template by registry name; raises ConfigError naming the choices."""
    registry = _registry(_system_prompts)
    if name not in registry:
        raise ConfigError(f"unknown template '{name}'; expected one of {', '.join(registry)}")
    return registry[name]


def list_templates() -> list[PromptTemplate]:
    return list(_registry(_system_prompts).values())


def template_words() -> list[str]:
    """Every whitespace-separated word the text/chat templates emit (to build tiny word-level test vocabularies)."""
    words: dict[str, None] = {}
    for template in list_templates():
        if template.wrapper != "model":
            for word in template.render_prompt("{}").split():
                words.setdefault(word, None)
    words.pop("{}", None)
    return list(words)
