"""The per-call lookups on the fast path (models file for prices, template files) find the same files as the
pathlib-based lookups they replaced, and still notice an edit."""

from __future__ import annotations

import os

import pytest

from skillweave.prompts import load_template
from skillweave.providers.model_config import models_path
from skillweave.providers.prices import _models_file_key, price_of


@pytest.mark.parametrize("where", ["env", "local", "xdg", "home", "none"])
def test_models_file_key_names_the_file_models_path_picks(tmp_path, monkeypatch, where):
    for var in ("SKILLWEAVE_MODELS", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    body = "models:\n  cheap:\n    kind: fake\n    model: x\n    price_input: 1\n    price_output: 2\n"
    if where == "env":
        monkeypatch.setenv("SKILLWEAVE_MODELS", str(tmp_path / "m.yaml"))
        (tmp_path / "m.yaml").write_text(body)
    elif where == "local":
        (tmp_path / "skillweave-models.yaml").write_text(body)
    elif where == "xdg":
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
        (tmp_path / "xdg" / "skillweave").mkdir(parents=True)
        (tmp_path / "xdg" / "skillweave" / "models.yaml").write_text(body)
    elif where == "home":
        (tmp_path / "home" / ".config" / "skillweave").mkdir(parents=True)
        (tmp_path / "home" / ".config" / "skillweave" / "models.yaml").write_text(body)
    key = _models_file_key()
    assert os.path.abspath(key[0]) == os.path.abspath(models_path())
    if where == "none":
        assert key[1] is None and price_of("cheap") is None
        return
    assert price_of("cheap").input == 1
    path = models_path()
    stat = path.stat()
    path.write_text(body.replace("price_input: 1", "price_input: 5"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _models_file_key() != key and price_of("cheap").input == 5  # an edited file is read again


def test_load_template_prefers_the_user_folder_and_sees_edits(tmp_path):
    packaged = load_template("skillmix/student")
    assert load_template("skillmix/student", tmp_path) is packaged  # nothing in the user folder: the packaged file
    (tmp_path / "skillmix").mkdir()
    (tmp_path / "skillmix" / "student.yaml").write_text("variables: [x]\nprompt: Say {{ x }}.\n")
    user = load_template("skillmix/student", tmp_path)
    assert user.path == tmp_path / "skillmix" / "student.yaml" and user.turns == ("Say {{ x }}.",)
    stat = user.path.stat()
    user.path.write_text("variables: [x]\nprompt: Shout {{ x }}.\n")
    os.utime(user.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_template("skillmix/student", tmp_path).turns == ("Shout {{ x }}.",)
    (tmp_path / "skillmix" / "judge.yaml").mkdir()  # a folder by that name is not a template
    assert load_template("skillmix/judge", tmp_path).path == load_template("skillmix/judge").path
