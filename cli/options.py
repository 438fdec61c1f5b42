"""Command-line options generated from a pipeline's settings model: one `--field-name` per field, its help from
the field's description, its default and range from the field, so the CLI and the stored config cannot drift.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import annotated_types
import click
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from skillweave.errors import ConfigError, UsageError
from skillweave.pipeline import PipelineConfig, validate_config


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True  # X | Y | None: the first alternative decides the option type
    return annotation, False


def _bounds(info: FieldInfo) -> tuple[Any, Any, bool, bool]:
    """(low, high, low is open, high is open) from the field's ge/gt/le/lt."""
    low = high = None
    low_open = high_open = False
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            low, low_open = meta.ge, False
        elif isinstance(meta, annotated_types.Gt):
            low, low_open = meta.gt, True
        if isinstance(meta, annotated_types.Le):
            high, high_open = meta.le, False
        elif isinstance(meta, annotated_types.Lt):
            high, high_open = meta.lt, True
    return low, high, low_open, high_open


def _range(kind: type, info: FieldInfo) -> Any:
    """click's type for an int or float field: a range where the field has bounds."""
    low, high, low_open, high_open = _bounds(info)
    if low is None and high is None:
        return kind
    if kind is int:  # an open integer bound is the closed one next to it
        return click.IntRange(min=None if low is None else low + low_open, max=None if high is None else high - high_open)
    return click.FloatRange(min=low, max=high, min_open=low_open, max_open=high_open)


def _shown(default: Any) -> bool:
    """Whether --help shows the default (not for None, a False flag or an empty list; 0 and 0.0 are shown)."""
    return not (default is None or default is False or (isinstance(default, list | tuple) and not default))


def click_option(name: str, info: FieldInfo, **override) -> Any:
    """The click option for one field (`override` replaces any keyword, e.g. a custom `type` or `default`;
    `decls` replaces the option's names, e.g. ["--exemplars"] where a command kept an older name; `flag`
    replaces the declaration `--field-name`, e.g. "--output" or, for a boolean, its own pair "--lora/--full").
    The help is always the field's description."""
    flag = override.pop("flag", None)
    annotation, optional = _unwrap_optional(info.annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # e.g. int | list[int]: the scalar
        annotation = typing.get_args(annotation)[0]
    default = None if info.default is PydanticUndefined else info.default
    if info.default_factory is not None:
        default = info.default_factory()
    kwargs: dict[str, Any] = {"help": info.description or "", "show_default": _shown(default)}
    decl = [flag or option_name(name)]
    if annotation is bool:
        if flag and "/" in flag:  # its own on/off pair
            kwargs["show_default"] = True
        elif default:
            decl = [f"{option_name(name)}/--no-{name.replace('_', '-')}"]
        else:
            kwargs.update(is_flag=True)
        kwargs["default"] = bool(default)
    elif typing.get_origin(annotation) is Literal:
        kwargs.update(type=click.Choice([str(v) for v in typing.get_args(annotation)]), default=default)
    elif typing.get_origin(annotation) is list:
        inner = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        kwargs.update(multiple=True, type=inner, default=default or (), show_default=bool(default))
    elif annotation in (int, float):
        kwargs.update(type=_range(annotation, info), default=default)
    else:
        kwargs.update(type=str, default=default)
    if info.is_required() and default is None:
        kwargs["required"] = True
    decl = list(override.pop("decls", decl))
    kwargs.update(override)
    if "default" in override and "show_default" not in override:
        kwargs["show_default"] = _shown(override["default"])
    if optional and "default" in kwargs and kwargs["default"] is None:
        kwargs["show_default"] = False
    return click.option(*decl, name, **kwargs)


def config_options(model: type[PipelineConfig], *, exclude: set[str] | frozenset[str] = frozenset(),
                   overrides: dict[str, dict] | None = None, only: list[str] | None = None):
    """Decorate a command with one option per field of `model` (its own fields in field order, then those every
    pipeline has), except `exclude` and the model's own `cli_exclude`; or just the fields in `only`.

    `overrides` maps a field to click keywords that replace the generated ones where a command keeps an older
    behaviour: `decls` (the option's names, e.g. ["--exemplars"]), `default`, `required`, `type`, `multiple`,
    `callback` (e.g. parse "2..4" into a list). The help text is always the field's description."""
    overrides = overrides or {}
    # retry: --timeout etc., max_cost / batch: --max-cost / --batch, added to every run command by cli/run.py;
    # merged_shards: written by `skillweave merge`
    skip = set(exclude) | set(model.cli_exclude) | {"retry", "max_cost", "batch", "merged_shards"}

    # the pipeline's own fields first, then those every pipeline has (--concurrency, --shard, --reply-cache)
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] in PipelineConfig.model_fields)
    if only is not None:
        fields = [(name, model.model_fields[name]) for name in only]

    flags = getattr(model, "cli_flags", {})  # declarations other than --field-name (trainer settings)

    def decorate(f):
        for name, info in reversed(fields):
            if name not in skip:
                extra = {"flag": flags[name]} if name in flags else {}
                f = click_option(name, info, **{**_CHECKS.get(name, {}), **extra, **overrides.get(name, {})})(f)
        return f

    return decorate


def _check_shard(_ctx, _param, value):
    from skillweave.graphs.shards import parse_shard

    parse_shard(value)  # 'Error: --shard ...' (exit 2) while parsing, before a command stores anything
    return value


_CHECKS = {"shard": {"callback": _check_shard, "metavar": "I/N"}}  # settings whose value is checked while parsing


def config_from_options(model: type[PipelineConfig], values: dict) -> PipelineConfig:
    """The typed config from the parsed options (fields only; `()` from an unused multiple option, or None from
    an option whose field has a default other than None, -> the field's default)."""
    def not_given(name: str, value: Any) -> bool:
        info = model.model_fields[name]
        if info.is_required():
            return False
        return value == [] or (value is None and info.get_default(call_default_factory=True) is not None)

    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k in model.model_fields}
    fields = {k: v for k, v in fields.items() if not not_given(k, v)}
    try:
        return validate_config(model, fields, what="options")
    except ConfigError as exc:
        raise UsageError(str(exc).replace("invalid options: ", "")) from None
