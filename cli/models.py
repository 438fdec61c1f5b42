"""`skillweave models`: list, show, check, add and remove the named models of the models file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import click

from skillweave.cli.common import echo_json, echo_table, json_option
from skillweave.errors import ConfigError, SkillweaveError, UsageError

EXAMPLES = """\b
Examples:
  skillweave models add vllm --kind openai --model Qwen/Qwen2.5-7B-Instruct \\
      --base-url http://10.0.0.1:8000/v1 --base-url http://10.0.0.2:8000/v1 --max-concurrency 128
  skillweave models add judge --kind openai --model gpt-4o --api-key-env OPENAI_API_KEY --rpm 500
  skillweave models list
  skillweave models check vllm
  skillweave run skillmix --model vllm --judge judge --k 2 --n 100
"""


def _path(ctx: click.Context) -> Path:
    from skillweave.providers.model_config import models_path

    explicit = ctx.find_object(dict).get("models_file")
    return Path(explicit) if explicit else models_path()


def _load(ctx: click.Context) -> tuple[Path, dict]:
    from skillweave.providers.model_config import load_models

    path = _path(ctx)
    if ctx.find_object(dict).get("models_file") and not path.exists():
        return path, {}
    return path, load_models(path)


def _summary(name: str, entry) -> dict:
    price = (f"{entry.price_input:g}/{entry.price_output:g}" if entry.price_input is not None
             and entry.price_output is not None else None)
    return {"name": name, "kind": entry.kind, "model": entry.model, "endpoints": len(entry.base_urls) or None,
            "max_concurrency": entry.max_concurrency, "rpm": entry.requests_per_minute,
            "tpm": entry.tokens_per_minute, "price_in/out_per_1M": price}


def register(root: click.Group) -> None:
    @root.group("models", epilog=EXAMPLES)
    @click.option("--file", "models_file", default=None, metavar="PATH",
                  help="Models file to read or write (default: $SKILLWEAVE_MODELS, else ./skillweave-models.yaml, "
                       "else ~/.config/skillweave/models.yaml).")
    @click.pass_context
    def models(ctx, models_file):
        """Named models: endpoints, fleets, keys, limits, retry policy and prices (docs/models.md)."""
        ctx.ensure_object(dict)
        ctx.obj["models_file"] = models_file

    @models.command("list")
    @json_option
    @click.pass_context
    def list_models(ctx, as_json):
        """List the named models.

        \b
        Example:
          skillweave models list --json
        """
        path, entries = _load(ctx)
        rows = [_summary(n, e) for n, e in entries.items()]
        if as_json:
            echo_json({"file": str(path), "models": rows})
            return
        click.echo(f"models file: {path}{'' if path.exists() else ' (not created yet)'}", err=True)
        echo_table(rows, list(rows[0]) if rows else ["name"], empty="(no named models)")

    @models.command("show")
    @click.argument("name")
    @json_option
    @click.pass_context
    def show(ctx, name, as_json):
        """Show one named model's full entry.

        \b
        Example:
          skillweave models show vllm
        """
        path, entries = _load(ctx)
        if name not in entries:
            raise UsageError(f"no model '{name}' in {path}")
        data = entries[name].model_dump(exclude_none=True, exclude_defaults=True)
        data = {"kind": entries[name].kind, **data}
        if as_json:
            echo_json({"name": name, **data})
            return
        import yaml

        click.echo(yaml.safe_dump({name: data}, sort_keys=False, allow_unicode=True).rstrip())

    @models.command("check")
    @click.argument("name", required=False)
    @click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
                  help="Seconds for each check call.")
    @json_option
    @click.pass_context
    def check(ctx, name, timeout, as_json):
        """One cheap call (max_tokens 1, no retries) per model, and per endpoint of a fleet.

        Exits 1 when any check fails; each failure shows the error.

        \b
        Example:
          skillweave models check          # every named model
          skillweave models check vllm
        """
        path, entries = _load(ctx)
        if name is not None and name not in entries:
            raise UsageError(f"no model '{name}' in {path}")
        names = [name] if name else list(entries)
        if not names:
            raise UsageError(f"no named models in {path}")
        rows = asyncio.run(_check_all({n: entries[n] for n in names}, timeout))
        if as_json:
            echo_json(rows)
        else:
            echo_table(rows, ["name", "endpoint", "status", "latency_ms", "detail"])
        failed = sum(r["status"] != "ok" for r in rows)
        if failed:
            raise SkillweaveError(f"{failed} of {len(rows)} checks failed")

    @models.command("add")
    @click.argument("name")
    @click.option("--kind", required=True, type=click.Choice(["openai", "anthropic", "langchain", "fake", "local"]),
                  help="Provider kind.")
    @click.option("--model", "model_id", required=True, help="The provider's model id (langchain: provider:model "
                                                             "or module:Class).")
    @click.option("--base-url", "base_urls", multiple=True, help="Endpoint base URL; repeat for a fleet.")
    @click.option("--api-key-env", default=None, help="Environment variable that holds the API key.")
    @click.option("--max-concurrency", type=click.IntRange(min=1), default=None, help="Requests in flight at most.")
    @click.option("--rpm", type=click.FloatRange(min=0, min_open=True), default=None, help="Requests per minute.")
    @click.option("--tpm", type=click.FloatRange(min=0, min_open=True), default=None, help="Tokens per minute.")
    @click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Seconds per request.")
    @click.option("--attempts", type=click.IntRange(min=1), default=None, help="Attempts per call.")
    @click.option("--max-wait", type=click.FloatRange(min=0), default=None, help="Longest wait between attempts (s).")
    @click.option("--cooldown", type=click.FloatRange(min=0), default=None,
                  help="Seconds a failing fleet endpoint stays out (default 10).")
    @click.option("--price-input", type=click.FloatRange(min=0), default=None, help="USD per 1M input tokens.")
    @click.option("--price-output", type=click.FloatRange(min=0), default=None, help="USD per 1M output tokens.")
    @click.option("--kwarg", "kwargs", multiple=True, metavar="KEY=VALUE",
                  help="langchain model keyword argument (VALUE parsed as JSON when it parses); repeatable.")
    @click.option("--replace", is_flag=True, help="Overwrite an existing entry of that name.")
    @click.pass_context
    def add(ctx, name, kind, model_id, base_urls, api_key_env, max_concurrency, rpm, tpm, timeout, attempts,
            max_wait, cooldown, price_input, price_output, kwargs, replace):
        """Add (or with --replace overwrite) a named model; the file is written atomically.

        \b
        Example:
          skillweave models add vllm --kind openai --model my-model \\
              --base-url http://127.0.0.1:8001/v1 --base-url http://127.0.0.1:8002/v1
        """
        from pydantic import ValidationError  # pydantic only where a command needs it (CLI start-up)

        from skillweave.providers.model_config import ModelEntry, ModelsFile, save_models

        path, entries = _load(ctx)
        if name in entries and not replace:
            raise UsageError(f"model '{name}' already exists in {path} (use --replace)")
        fields = dict(kind=kind, model=model_id, base_urls=list(base_urls), api_key_env=api_key_env,
                      max_concurrency=max_concurrency, requests_per_minute=rpm, tokens_per_minute=tpm,
                      timeout=timeout, attempts=attempts, max_wait=max_wait, cooldown=cooldown,
                      price_input=price_input, price_output=price_output, kwargs=_kwargs(kwargs))
        try:
            entry = ModelEntry(**{k: v for k, v in fields.items() if v not in (None, [], {})})
            ModelsFile(models={name: entry})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
        entries = {**entries, name: entry}
        click.echo(f"wrote {save_models(entries, path)}: {name}", err=True)

    @models.command("remove")
    @click.argument("name")
    @click.pass_context
    def remove(ctx, name):
        """Remove a named model; the file is written atomically.

        \b
        Example:
          skillweave models remove vllm
        """
        from skillweave.providers.model_config import save_models

        path, entries = _load(ctx)
        if name not in entries:
            raise UsageError(f"no model '{name}' in {path}")
        entries = {n: e for n, e in entries.items() if n != name}
        click.echo(f"wrote {save_models(entries, path)}: removed {name}", err=True)


def _kwargs(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--kwarg '{pair}' is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


async def _check_all(entries: dict, timeout: float) -> list[dict]:
    from skillweave.providers.core import close_clients

    rows = []
    try:
        for name, entry in entries.items():
            targets = [(u, entry.model_copy(update={"base_urls": [u]})) for u in entry.base_urls] or [(None, entry)]
            results = await asyncio.gather(*(_check_one(name, url, e, timeout) for url, e in targets))
            rows += results
    finally:
        await close_clients()
    return rows


async def _check_one(name: str, url: str | None, entry, timeout: float) -> dict:
    from skillweave.providers.core import ChatRequest
    from skillweave.providers.model_config import build_from_entry

    row = {"name": name, "endpoint": url or "-", "status": "error", "latency_ms": None, "detail": ""}
    start = time.perf_counter()
    provider = None
    try:
        provider = build_from_entry(name, entry.model_copy(update={"attempts": 1, "timeout": timeout}))
        request = ChatRequest(messages=[{"role": "user", "content": "Reply with OK."}], temperature=0.0,
                              max_tokens=1, meta={"fake_reply": "OK"})
        result, _ = await provider.chat(request)
        row.update(status="ok", detail=(result.texts[0] if result.texts else "")[:40])
    except (SkillweaveError, ConfigError) as exc:
        row["detail"] = str(exc)
    except Exception as exc:  # an SDK error outside the provider's own handling
        row["detail"] = f"{type(exc).__name__}: {exc}"
    finally:
        if provider is not None:
            await provider.aclose()
    row["latency_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return row
