"""A run owns its prompts: the folder its templates came from and the versions it used.

The first execution of a run records its prompt folder (`--prompts-dir` / $SKILLWEAVE_PROMPTS resolved to an
absolute path, or '' for the packaged templates) in `runs.prompts_dir`, and every template version it loads in
`run_prompts`. Whatever continues the run (`resume`, `review approve|edit|reject|import`, `review serve`,
`review skills`, `eval math2 --resume`) loads templates from that folder and checks each version against the
recorded one, so a continuation sends the same prompts and its call keys match the stored replies. A changed
template stops the continuation with an error naming the template and both versions, before any thread runs;
`allow_changed` (`--allow-changed-prompts`) continues with the current templates instead and re-pins them.

Runs recorded before versions were hashes of what is sent (`b2:` versions, no `run_prompts` rows) are pinned
to the versions found in their model calls and items and keep the `b2:` scheme, so their call keys match too.
A packaged file edited only where nothing is sent (its description) still stands for the released `b2:`
version the run pinned, when prompts/legacy_versions.json lists that version with today's `b3:` (prompts/legacy.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from skillweave.errors import TemplateError
from skillweave.prompts import load_template, scheme_of
from skillweave.prompts.legacy import as_released
from skillweave.store import Store
from skillweave.store import run_prompts as rows

ALLOW_FLAG = "--allow-changed-prompts"


class PromptsChangedError(TemplateError):
    """A template a run used differs from the one a continuation would load (exit 2, nothing written)."""


@dataclass
class RunPrompts:
    prompts_dir: str | None  # what load_template gets (None: packaged templates only)
    pins: dict[str, set[str]]
    scheme: str


def _folder_label(folder: str) -> str:
    return f"prompts folder '{folder}'" if folder else "the packaged templates"


def requested_dir(prompts_dir: str | os.PathLike | None) -> str | None:
    """The folder this command asks for (flag or $SKILLWEAVE_PROMPTS), absolute; None when it names none."""
    chosen = prompts_dir or os.environ.get("SKILLWEAVE_PROMPTS")
    return str(Path(chosen).expanduser().resolve()) if chosen else None


def load_pins(store: Store, run_id: str, *, record: bool = True) -> tuple[dict[str, set[str]], str]:
    """The run's pinned versions and their scheme; a run from before `run_prompts` is pinned from its calls
    (and, with `record`, those pins are written, so later continuations read one small table)."""
    pins = rows.pinned_versions(store, run_id)
    if not pins:
        pins = rows.used_versions(store, run_id)
        if record:
            record_pins(store, run_id, pins)
    schemes = {scheme_of(v) for versions in pins.values() for v in versions}
    return pins, ("b2" if schemes == {"b2"} else "b3")


def record_pins(store: Store, run_id: str, pins: dict[str, set[str]]) -> None:
    for name, versions in pins.items():
        for version in versions:
            rows.pin_version(store, run_id, name, version)


def open_run_prompts(store: Store, run_id: str, prompts_dir: str | os.PathLike | None = None, *,
                     allow_changed: bool = False) -> RunPrompts:
    """Decide which folder and version scheme a run's execution uses; raise when its templates changed."""
    recorded = rows.recorded_prompts_dir(store, run_id)
    requested = requested_dir(prompts_dir)
    if recorded is None or (requested or "") == recorded:
        use = requested or ""
    elif requested is None:
        use = recorded
    elif allow_changed:
        use = requested
    else:
        raise PromptsChangedError(
            f"run {run_id} was made with {_folder_label(recorded)}; this command names {_folder_label(requested)} "
            f"(--prompts-dir or SKILLWEAVE_PROMPTS). Leave it out to continue with the run's own prompts, or pass "
            f"{ALLOW_FLAG} to continue with the other folder")
    if use and not Path(use).is_dir():
        raise PromptsChangedError(
            f"run {run_id} uses prompts folder '{use}', which does not exist any more; restore it, or pass "
            f"--prompts-dir DIR {ALLOW_FLAG} to continue with another folder")
    pins, scheme = load_pins(store, run_id, record=False)  # nothing is written before the checks pass
    changed = []
    for name in sorted(pins):
        template = as_released(load_template(name, use or None).in_scheme(scheme), pins[name])
        if template.version not in pins[name]:
            changed.append((name, template))
    if changed and not allow_changed:
        details = "; ".join(f"template '{name}' was {' or '.join(sorted(pins[name]))}, is now {t.version} "
                            f"({t.path})" for name, t in changed)
        older = (" The run was stored before prompt folders were recorded: give the --prompts-dir it was made "
                 "with." if recorded is None else "")
        raise PromptsChangedError(
            f"run {run_id}: {details}. Its stored replies were made with the old version: restore the template, "
            f"or pass {ALLOW_FLAG} to continue with the new version (its model calls are made again).{older}")
    record_pins(store, run_id, pins)  # no-op for pins already in run_prompts (INSERT OR IGNORE)
    for name, template in changed:
        rows.pin_version(store, run_id, name, template.version, replace=True)
        pins[name] = {template.version}
        store.add_event(run_id, None, "prompts", "changed",
                        f"{name}: continued with {template.version} ({ALLOW_FLAG})")
    if recorded != use:
        rows.record_prompts_dir(store, run_id, use)
    return RunPrompts(prompts_dir=use or None, pins=pins, scheme=scheme)


def check_pin(ctx, template) -> None:
    """First use of a template version in this process: pin it, or refuse a version the run did not use."""
    pinned = ctx.pins.get(template.name)
    if pinned and template.version not in pinned:
        if not ctx.allow_changed_prompts:
            raise PromptsChangedError(
                f"run {ctx.run_id}: template '{template.name}' was {' or '.join(sorted(pinned))}, is now "
                f"{template.version} ({template.path}); it changed while the run was going. Restore it, or pass "
                f"{ALLOW_FLAG} to continue with the new version")
        rows.pin_version(ctx.store, ctx.run_id, template.name, template.version, replace=True)
        ctx.pins[template.name] = {template.version}
        return
    if not pinned:
        rows.pin_version(ctx.store, ctx.run_id, template.name, template.version)
        ctx.pins[template.name] = {template.version}
