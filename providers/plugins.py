"""Model providers from other packages: the entry-point group `skillweave.providers`.

An entry point `name = "package.module:ProviderClass"` makes `--model name:<model>` use that class (a subclass
of `skillweave.providers.core.Provider`, constructed as `ProviderClass(model, max_concurrency=...)`).
Built-in kinds (local, fake, openai, anthropic) cannot be replaced. docs/extending.md has a worked example.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from skillweave.errors import ConfigError

GROUP = "skillweave.providers"
BUILTIN_KINDS = frozenset({"local", "fake", "openai", "anthropic"})
_found: dict[str, object] | None = None


def plugin_providers() -> dict[str, object]:
    """Provider kind -> its entry point (loaded when first used), discovered once per process."""
    global _found
    if _found is None:
        _found = {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in BUILTIN_KINDS}
    return _found


def load_provider_class(kind: str):
    try:
        return plugin_providers()[kind].load()
    except Exception as exc:
        raise ConfigError(f"provider '{kind}' from entry point group {GROUP} failed to load: {exc}") from None


def refresh() -> None:
    """Forget discovered providers (after installing a package into a running interpreter)."""
    global _found
    _found = None
