"""Templates render with plain-dict globals (prompts._compiled): the same text as stock Jinja, the same globals,
still sandboxed."""

from __future__ import annotations

import jinja2
import jinja2.sandbox
import pytest

from skillweave.errors import TemplateError
from skillweave.prompts import _compiled, list_templates, load_template

STOCK = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                                            autoescape=False)


def test_compiled_templates_keep_the_environment_globals_as_a_plain_dict():
    template = _compiled("{{ x }}")
    assert type(template.globals) is dict  # not Jinja's ChainMap, copied key by key into every render
    assert template.globals == dict(STOCK.from_string("{{ x }}").globals)


def test_globals_still_work_in_templates():
    source = ("{% for i in range(3) %}{{ i }}{% endfor %}|{{ dict(a=1)['a'] }}|"
              "{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}|"
              "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}")
    assert _compiled(source).render() == STOCK.from_string(source).render() == "012|1|6|aba"


def test_every_packaged_turn_renders_as_stock_jinja():
    """Each packaged template's turns, rendered with made-up values for its variables, equal a stock render."""
    values = {"skills": [{"name": "metaphor", "definition": "d", "example": "e", "category": "c"}],
              "topic": "sewing", "k": 1, "sentence_limit": "one sentence", "shorten": True, "text": "Some text."}
    checked = 0
    for template in list_templates():
        for source in (*template.turns, template.system or ""):
            try:
                expected = STOCK.from_string(source).render(**values)
            except jinja2.TemplateError:
                continue  # a variable this made-up set lacks: StrictUndefined, as in both
            assert _compiled(source).render(**values) == expected, template.name
            checked += 1
    assert checked >= 5


def test_sandbox_still_refuses_python_internals():
    with pytest.raises(jinja2.exceptions.SecurityError):
        _compiled("{{ cycler.__init__.__globals__ }}").render()
    template = load_template("skillmix/student")
    with pytest.raises(TemplateError):
        template.render_turn(0, {})  # missing variables: an error before any render
