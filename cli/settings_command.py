"""`SettingsCommand`: a click command whose options are generated from a settings model (`cli/options.py`), built
the first time the command's parameters are needed (parsing, `--help`, completion).

The trainer commands (`train sft|dpo`, `ches score`, `select less|infsgd|rds`, `unlearn`, `topic-model train`)
name their model as a `"module:Class"` string, so building the command line imports neither pydantic nor the
model's module (tests/test_layers.py checks it). A command's hand-written options (its inputs, e.g. `unlearn
--forget`) come first, then the generated ones, then `--json`.
"""

from __future__ import annotations

import importlib
from typing import Any

import click


class SettingsCommand(click.Command):
    """`settings`: the model as "module:Class"; `overrides`: per-field click keywords (e.g. a `click.Path`
    type, `required`); `exclude`: fields without an option (besides the model's own `cli_exclude`)."""

    def __init__(self, *args: Any, settings: str, overrides: dict[str, dict] | None = None,
                 exclude: frozenset[str] | set[str] = frozenset(), **kwargs: Any) -> None:
        self._settings, self._overrides, self._exclude = settings, overrides or {}, frozenset(exclude)
        self._generated = False
        super().__init__(*args, **kwargs)

    @property
    def params(self) -> list[click.Parameter]:
        if not self._generated:
            self._generated = True
            own = [p for p in self._params if p.name != "as_json"]
            self._params = own + self._generate() + [p for p in self._params if p.name == "as_json"]
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params = value

    def settings_model(self) -> Any:
        module, _, name = self._settings.partition(":")
        return getattr(importlib.import_module(module), name)

    def _generate(self) -> list[click.Parameter]:
        from skillweave.cli.options import config_options

        def target() -> None: ...

        config_options(self.settings_model(), exclude=self._exclude, overrides=self._overrides)(target)
        return list(reversed(getattr(target, "__click_params__", [])))

    def settings(self, options: dict[str, Any], **values: Any) -> Any:
        """The validated settings from the parsed options (fields only) and `values` (e.g. `db`); a bad value is
        a usage error (one `Error:` line, exit 2)."""
        from skillweave.cli.options import config_from_options

        return config_from_options(self.settings_model(), {**options, **values})


def settings_command(name: str, settings: str, **kwargs: Any):
    """`@settings_command("sft", "skillweave.trainers.settings:SFTConfig", overrides=...)` on a callback."""
    return click.command(name, cls=SettingsCommand, settings=settings, **kwargs)


def options_table(command: SettingsCommand) -> str:
    """The command's generated options as a markdown table (option, default, range or choices, description): the
    tables in docs/ are this text, and a test keeps them equal."""
    import typing

    import annotated_types

    model = command.settings_model()
    bounds = ((annotated_types.Gt, "> {}", "gt"), (annotated_types.Ge, "≥ {}", "ge"), (annotated_types.Lt, "< {}", "lt"),
              (annotated_types.Le, "≤ {}", "le"), (annotated_types.MultipleOf, "multiple of {}", "multiple_of"))
    rows = ["| option | default | range | what |", "|---|---|---|---|"]
    for param in command.params:
        if not isinstance(param, click.Option) or param.name not in model.model_fields:
            continue
        info = model.model_fields[param.name]
        default = info.default_factory() if info.default_factory is not None else info.default
        if param.required:
            shown = "required"
        elif isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = "–" if default in (None, "", []) else f"`{default}`"
        choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
        limits = [text.format(getattr(m, attr)) for m in info.metadata for kind, text, attr in bounds
                  if isinstance(m, kind)]
        span = ", ".join(f"`{c}`" for c in choices) or ", ".join(limits)
        flag = "/".join(param.opts + param.secondary_opts)
        rows.append(f"| `{flag}` | {shown} | {span} | {info.description} |")
    return "\n".join(rows)
