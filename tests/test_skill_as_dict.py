"""Skill.as_dict (called for every skill of every planned item) gives what dataclasses.asdict gives, in order."""

from dataclasses import asdict

from skillweave.catalog import Skill, bundled_skills


def test_as_dict_is_asdict_for_every_bundled_skill_and_a_bare_one():
    for skill in [*bundled_skills(), Skill("only a name")]:
        got = skill.as_dict()
        assert got == asdict(skill) and list(got) == list(asdict(skill))
        got["name"] = "changed"  # a copy: the frozen skill is untouched
        assert skill.name != "changed"
