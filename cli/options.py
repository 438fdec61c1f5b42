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


def _bounds(info: FieldInfo) -> tuple[Any, Any]:
    low = high = None
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge | annotated_types.Gt):
            low = getattr(meta, "ge", None) if isinstance(meta, annotated_types.Ge) else meta.gt
        if isinstance(meta, annotated_types.Le | annotated_types.Lt):
            high = getattr(meta, "le", None) if isinstance(meta, annotated_types.Le) else meta.lt
    return low, high


def _open_bounds(info: FieldInfo) -> dict[str, bool]:
    """`min_open` / `max_open` for a click range from `gt` / `lt` (so `gt=0` refuses 0 when parsing)."""
    return {"min_open": any(isinstance(m, annotated_types.Gt) for m in info.metadata),
            "max_open": any(isinstance(m, annotated_types.Lt) for m in info.metadata)}


def click_option(name: str, info: FieldInfo, **override) -> Any:
    """The click option for one field (`override` replaces any keyword, e.g. a custom `type`; `flag` replaces
    the declaration `--field-name`, e.g. "--output" or, for a boolean, "--lora/--full")."""
    flag = override.pop("flag", None)
    annotation, optional = _unwrap_optional(info.annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # e.g. int | list[int]: the scalar
        annotation = typing.get_args(annotation)[0]
    default = None if info.default is PydanticUndefined else info.default
    if info.default_factory is not None:
        default = info.default_factory()
    kwargs: dict[str, Any] = {"help": info.description or "",  # 0 and 0.0 are shown, False is not
                              "show_default": not (default is None or default is False or default == [])}
    decl = [flag or option_name(name)]
    low, high = _bounds(info)
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
    elif annotation is int:
        kwargs.update(type=click.IntRange(min=low, max=high, **_open_bounds(info))
                      if low is not None or high is not None else int, default=default)
    elif annotation is float:
        kwargs.update(type=click.FloatRange(min=low, max=high, **_open_bounds(info))
                      if low is not None or high is not None else float, default=default)
    else:
        kwargs.update(type=str, default=default)
    if info.is_required() and default is None:
        kwargs["required"] = True
    kwargs.update(override)
    if optional and "default" in kwargs and kwargs["default"] is None:
        kwargs["show_default"] = False
    return click.option(*decl, name, **kwargs)


def config_options(model: type[PipelineConfig], *, exclude: set[str] | frozenset[str] = frozenset(),
                   overrides: dict[str, dict] | None = None):
    """Decorate a command with one option per field of `model` (in field order), except `exclude` and the
    model's own `cli_exclude`."""
    overrides = overrides or {}
    # retry: --timeout etc., max_cost / batch: --max-cost / --batch, added to every run command by cli/run.py
    skip = set(exclude) | set(model.cli_exclude) | {"retry", "max_cost", "batch"}
    flags = getattr(model, "cli_flags", {})  # declarations other than --field-name (trainer settings)

    def decorate(f):
        for name, info in reversed(list(model.model_fields.items())):
            if name not in skip:
                extra = {"flag": flags[name]} if name in flags else {}
                f = click_option(name, info, **{**extra, **overrides.get(name, {})})(f)
        return f

    return decorate


def config_from_options(model: type[PipelineConfig], values: dict) -> PipelineConfig:
    """The typed config from the parsed options (fields only; `()` from an unused multiple option -> default)."""
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k in model.model_fields}
    fields = {k: v for k, v in fields.items() if not (v == [] and not model.model_fields[k].is_required())}
    try:
        return validate_config(model, fields, what="options")
    except ConfigError as exc:
        raise UsageError(str(exc).replace("invalid options: ", "")) from None
