"""The prompts a run owns: the folder its templates came from and the template versions it used."""


def migrate(db):
    # NULL: not recorded yet (a run from before this migration, or one that has not started);
    # '': packaged templates only; otherwise the absolute path of the run's --prompts-dir.
    db["runs"].add_column("prompts_dir", str)
    # One row per (run, template, version) the run used; a continuation must load the same versions.
    db["run_prompts"].create(
        {"run_id": str, "name": str, "version": str, "pinned_at": str},
        pk=("run_id", "name", "version"),
    )
