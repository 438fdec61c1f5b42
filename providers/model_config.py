"""The models file: named models (kind, model id, endpoints, key variable, limits, retry policy, prices).

Found at `$SKILLWEAVE_MODELS`, else `./skillweave-models.yaml`, else the user config folder
(`$XDG_CONFIG_HOME/skillweave/models.yaml`, default `~/.config/skillweave/models.yaml`). `--model NAME` and
`--judge NAME` resolve a NAME through it; the shorthands (`local`, `fake`, `openai:<m>`, `anthropic:<m>`,
`replay:...`, `langchain:...`) never do. docs/models.md is the reference.

```yaml
models:
  student:
    kind: openai
    model: Qwen/Qwen2.5-7B-Instruct
    base_urls: [http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1]
    max_concurrency: 128
  judge:
    kind: openai
    model: gpt-4o
    api_key_env: OPENAI_API_KEY
    requests_per_minute: 500
    tokens_per_minute: 200000
    price_input: 2.5     # USD per 1M input tokens
    price_output: 10.0
```
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skillweave.errors import ConfigError

KINDS = ("openai", "anthropic", "langchain", "fake", "local")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHORTHANDS = ("local", "fake", "openai", "anthropic", "replay", "langchain")
_LOADED: dict[tuple, dict] = {}
_PRICES: dict[tuple, dict] = {}


class ModelEntry(BaseModel):
    """One named model. Unset limits mean: no client-side limit; unset retry fields keep the provider defaults."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "anthropic", "langchain", "fake", "local"]
    model: str = Field(min_length=1, description="The provider's model id; for langchain `provider:model` or "
                                                "`module:Class`.")
    base_urls: list[str] = Field(default_factory=list, description="One URL, or several forming a fleet.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    max_concurrency: int | None = Field(None, ge=1)
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0, description="Seconds per request.")
    attempts: int | None = Field(None, ge=1, description="Attempts per call, the first included.")
    max_wait: float | None = Field(None, ge=0, description="Longest wait between attempts, seconds.")
    cooldown: float | None = Field(None, ge=0, description="Seconds a failing fleet endpoint stays out.")
    price_input: float | None = Field(None, ge=0, description="USD per 1M input tokens.")
    price_output: float | None = Field(None, ge=0, description="USD per 1M output tokens.")
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments for a langchain chat model.")

    @field_validator("base_urls", mode="before")
    @classmethod
    def _one_url(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("base_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"'{url}' is not an http(s) URL")
        return [u.rstrip("/") for u in value]

    @model_validator(mode="after")
    def _kind_fields(self):
        if self.base_urls and self.kind not in ("openai", "anthropic"):
            raise ValueError(f"base_urls apply to kind openai or anthropic, not {self.kind}")
        if self.kind == "anthropic" and len(self.base_urls) > 1:
            raise ValueError("a fleet (several base_urls) needs kind openai")
        limits = [f for f in ("requests_per_minute", "tokens_per_minute", "cooldown") if getattr(self, f) is not None]
        if limits and self.kind != "openai":
            raise ValueError(f"{limits[0]} applies to kind openai only")
        if self.kwargs and self.kind != "langchain":
            raise ValueError("kwargs apply to kind langchain only")
        return self


class PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, description="USD per 1M input tokens.")
    output: float = Field(ge=0, description="USD per 1M output tokens.")


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelEntry] = Field(default_factory=dict)
    # prices by spec (`openai:gpt-4o`, `fake`), overriding the built-in table of providers/prices.py (docs/cost.md)
    prices: dict[str, PriceEntry] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _names(cls, value: dict) -> dict:
        for name in value:
            if not NAME_RE.match(name) or name in SHORTHANDS:
                raise ValueError(f"model name '{name}' must be letters, digits, '_', '.', '-' (no ':') and not "
                                 f"a shorthand ({', '.join(SHORTHANDS)})")
        return value


def user_models_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "skillweave" / "models.yaml"


def models_path(*, for_writing: bool = False) -> Path:
    """The models file in use: $SKILLWEAVE_MODELS, else ./skillweave-models.yaml, else the user config file.

    For writing, when none exists yet, the user config file is created (unless $SKILLWEAVE_MODELS names one).
    """
    if os.environ.get("SKILLWEAVE_MODELS"):
        return Path(os.environ["SKILLWEAVE_MODELS"])
    local = Path("skillweave-models.yaml")
    if local.is_file():
        return local
    return user_models_path()


def load_models(path: Path | None = None) -> dict[str, ModelEntry]:
    """The named models of the models file (empty when there is none); a bad file is a ConfigError naming it."""
    import yaml

    path = Path(path) if path is not None else models_path()
    if not path.is_file():
        if os.environ.get("SKILLWEAVE_MODELS") and path == Path(os.environ["SKILLWEAVE_MODELS"]):
            raise ConfigError(f"models file {path} (from SKILLWEAVE_MODELS) does not exist")
        return {}
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _LOADED:  # parse_spec runs per model call: a named model costs one stat, not a YAML parse
        return _LOADED[key]
    _PRICES.pop(key, None)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"models file {path}: {str(exc).splitlines()[0]}") from None
    try:
        parsed = ModelsFile.model_validate(data)
        models = parsed.models
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise ConfigError(f"models file {path}: {where}: {message}") from None
    _LOADED.clear()
    _LOADED[key] = models
    _PRICES.clear()
    _PRICES[key] = parsed.prices
    return models


def load_price_table(path: Path | None = None) -> dict[str, PriceEntry]:
    """The models file's `prices:` table (spec -> input/output USD per 1M tokens); empty without a file."""
    path = Path(path) if path is not None else models_path()
    if not path.is_file():
        return {}
    load_models(path)
    stat = path.stat()
    return _PRICES.get((str(path.resolve()), stat.st_mtime_ns, stat.st_size), {})


def find_model(name: str) -> ModelEntry | None:
    if not NAME_RE.match(name or ""):
        return None
    return load_models().get(name)


def save_models(models: dict[str, ModelEntry], path: Path | None = None) -> Path:
    """Write the file atomically (a temporary file in the same folder, then rename): never half-written."""
    import yaml

    path = Path(path) if path is not None else models_path(for_writing=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"models": {name: entry.model_dump(exclude_defaults=True, exclude_none=True)
                       for name, entry in models.items()}}
    prices = load_price_table(path)  # `models add/remove` keep the file's price table
    if prices:
        data["prices"] = {spec: price.model_dump() for spec, price in prices.items()}
    fd, tmp = tempfile.mkstemp(prefix=".models-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---- hooks used by providers/core.py --------------------------------------------------------------------
def parse_extra_spec(spec: str) -> tuple[str, str] | None:
    """`langchain:<rest>` -> ('langchain', rest); a models-file NAME -> ('named', NAME); else None."""
    kind, _, rest = spec.partition(":")
    if kind == "langchain" and rest:
        return "langchain", rest
    if find_model(spec) is not None:
        return "named", spec
    return None


def build_provider(kind: str, model: str, *, max_concurrency: int = 64):
    """A provider for a `langchain:` spec or a named model of the models file."""
    if kind == "langchain":
        from skillweave.providers.langchain_chat import LangChainProvider

        return LangChainProvider(model, max_concurrency=max_concurrency)
    entry = find_model(model)
    if entry is None:
        raise ConfigError(f"model '{model}' is not in the models file {models_path()}")
    return build_from_entry(model, entry, max_concurrency=max_concurrency)


def build_from_entry(name: str, entry: ModelEntry, *, max_concurrency: int = 64):
    """A provider for one models-file entry (its own bound, retry policy, endpoints and limits)."""
    from skillweave.providers.core import RetryPolicy

    retry = RetryPolicy()
    if entry.attempts is not None:
        retry.max_attempts = entry.attempts
    if entry.max_wait is not None:
        retry.max_delay = entry.max_wait
    if entry.timeout is not None:
        retry.timeout = entry.timeout
    kw = dict(max_concurrency=entry.max_concurrency or max_concurrency, retry=retry)
    if entry.kind == "openai":
        from skillweave.providers.fleet import FleetOpenAIProvider

        provider = FleetOpenAIProvider(entry.model, name=name, entry=entry, **kw)
    elif entry.kind == "langchain":
        from skillweave.providers.langchain_chat import LangChainProvider

        provider = LangChainProvider(entry.model, kwargs=entry.kwargs, **kw)
    elif entry.kind == "anthropic":
        provider = _anthropic(entry, kw)
    else:
        from skillweave.providers.core import FakeProvider, LocalProvider

        cls = FakeProvider if entry.kind == "fake" else LocalProvider
        if entry.kind == "local":
            kw.pop("retry")
        provider = cls(entry.model, **kw)
    provider.entry = entry
    return provider


def _anthropic(entry: ModelEntry, kw: dict):
    from skillweave.providers.core import AnthropicProvider, Provider

    key = os.environ.get(entry.api_key_env or "ANTHROPIC_API_KEY")
    if not key and (entry.api_key_env or not entry.base_urls):
        raise ConfigError(f"anthropic:{entry.model} needs ${entry.api_key_env or 'ANTHROPIC_API_KEY'}")
    base_url = entry.base_urls[0] if entry.base_urls else None

    class ConfiguredAnthropic(AnthropicProvider):
        """The Anthropic provider with the models file's key variable and base URL."""

        def __init__(self, model: str, **kwargs):
            import anthropic

            Provider.__init__(self, model, **kwargs)
            self._anthropic = anthropic

        def _per_loop(self, factory):
            return Provider._per_loop(self, lambda: self._anthropic.AsyncAnthropic(
                api_key=key or "no-key", base_url=base_url, max_retries=0, timeout=self.retry.timeout))

    return ConfiguredAnthropic(entry.model, **kw)
