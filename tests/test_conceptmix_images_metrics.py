"""ConceptMix image backends (render, OpenAI-compatible images API) and metrics with confidence intervals."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from skillweave.errors import ConfigError, ModelCallError
from skillweave.metrics.conceptmix import binomial_ci, category_breakdown, conceptmix_scores, plot_scores
from skillweave.providers.images import (
    OpenAIImagesBackend,
    image_backend,
    image_data_url,
    render_configuration,
    save_image,
)

CONFIG = {"objects": [{"id": 1, "item": "cat", "number": "3", "color": "purple", "texture": "fluffy"},
                      {"id": 2, "item": "table", "shape": "rectangle"}],
          "relation": [{"name": "top", "ObjectA_id": 1, "ObjectB_id": 2}], "style": "pixel art"}


def _pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_render_is_deterministic_and_draws_the_configuration():
    a = render_configuration(CONFIG, "three purple cats")
    assert a == render_configuration(CONFIG, "three purple cats")
    image = Image.open(io.BytesIO(a))
    assert image.size == (512, 512) and image.text["prompt"] == "three purple cats"
    purple = sum(1 for p in _pixels(a).getdata() if p == (130, 60, 180))
    assert purple > 2000  # three cats filled with the purple of the palette
    recolored = json.loads(json.dumps(CONFIG))
    recolored["objects"][0]["color"] = "green"
    assert sum(1 for p in _pixels(render_configuration(recolored)).getdata() if p == (130, 60, 180)) == 0


def test_render_counts_instances():
    def blue_blobs(n: int) -> int:
        data = render_configuration({"objects": [{"id": 1, "item": "dog", "number": str(n), "color": "blue"}]})
        row = _pixels(data)
        # scan the middle row and count runs of the palette blue
        y = next(y for y in range(512) if any(row.getpixel((x, y)) == (40, 90, 214) for x in range(512)))
        y += 20
        runs, inside = 0, False
        for x in range(512):
            is_blue = row.getpixel((x, y)) == (40, 90, 214)
            runs += is_blue and not inside
            inside = is_blue
        return runs

    assert [blue_blobs(n) for n in (2, 3, 4)] == [2, 3, 4]


def test_relations_place_objects():
    def centre_x(config: dict, rgb: tuple) -> float:
        img = _pixels(render_configuration(config))
        xs = [x for x in range(0, 512, 2) for y in range(0, 512, 4) if img.getpixel((x, y)) == rgb]
        return sum(xs) / len(xs)

    def xs(config: dict, rgb: tuple) -> list[int]:
        img = _pixels(render_configuration(config))
        return [x for x in range(0, 512, 2) for y in range(0, 512, 4) if img.getpixel((x, y)) == rgb]

    crowd = {"objects": [{"id": 1, "item": "apple", "number": "4", "color": "red"},
                         {"id": 2, "item": "book", "color": "blue"}]}
    assert max(xs(crowd, (214, 40, 40))) < min(xs(crowd, (40, 90, 214)))  # no relation: side by side, no overlap
    for name, sign in (("left", -1), ("right", 1)):
        config = {"objects": [{"id": 1, "item": "cat", "color": "red"}, {"id": 2, "item": "dog", "color": "blue"}],
                  "relation": [{"name": name, "ObjectA_id": 2, "ObjectB_id": 1}]}
        assert sign * (centre_x(config, (40, 90, 214)) - centre_x(config, (214, 40, 40))) > 50


def test_content_hash_storage(tmp_path):
    backend = image_backend("render")
    image = backend.generate("a cat", CONFIG)
    name = save_image(image, tmp_path / "imgs")
    assert name.endswith(".png") and len(name) == 36
    assert save_image(image, tmp_path / "imgs") == name
    assert len(list((tmp_path / "imgs").iterdir())) == 1
    assert image_data_url(tmp_path / "imgs" / name).startswith("data:image/png;base64,iVBOR")


def test_unknown_or_unusable_specs_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown image model spec 'dalle'"):
        image_backend("dalle")
    with pytest.raises(ConfigError, match="has none"):
        image_backend("render").generate("text only", None)
    with pytest.raises(ConfigError, match="diffusers"):
        image_backend(f"diffusers:{tmp_path / 'nope'}")


def test_openai_images_backend_honours_base_url(monkeypatch):
    from openai import OpenAI

    png = render_configuration(CONFIG)
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"created": 0, "data": [{"b64_json": base64.b64encode(png).decode()}]})

    monkeypatch.setenv("OPENAI_BASE_URL", "http://images.test/v1")
    client = OpenAI(api_key="test", http_client=httpx.Client(transport=httpx.MockTransport(handler)), max_retries=0)
    backend = OpenAIImagesBackend("dall-e-3", client=client)
    image = backend.generate("three purple cats on a table")
    assert image.data == png and image.ext == "png" and image.model == "openai-images:dall-e-3"
    assert seen["url"] == "http://images.test/v1/images/generations"
    assert seen["body"]["prompt"] == "three purple cats on a table" and seen["body"]["response_format"] == "b64_json"

    failing = OpenAI(api_key="test", max_retries=0,
                     http_client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))))
    with pytest.raises(ModelCallError, match="openai-images:dall-e-3 failed"):
        OpenAIImagesBackend("dall-e-3", client=failing).generate("x")


def test_openai_images_without_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        image_backend("openai-images:gpt-image-1").generate("x")


def test_binomial_ci_matches_the_leaderboard_width():
    ci = binomial_ci(156, 300)  # 0.52 at n = 300 -> ± 0.0565
    assert ci["p"] == pytest.approx(0.52) and ci["half_width"] == pytest.approx(0.05653, abs=1e-4)
    assert binomial_ci(0, 0)["p"] is None
    assert binomial_ci(10, 10)["high"] == 1.0


def _record(k, answers, categories, errors=()):
    return {"k": k, "questions": [{"category": c, "answer": a, "error": i in errors}
                                  for i, (a, c) in enumerate(zip(answers, categories, strict=True))]}


def test_scores_per_k_and_breakdown(tmp_path):
    records = [
        _record(1, [1, 1], ["object", "color"]),
        _record(1, [1, 0], ["object", "color"]),
        _record(1, [1, 1], ["object", "style"]),
        _record(1, [0, 0], ["object", "spatial"], errors=(1,)),
        _record(2, [1, 1, 1], ["object", "object", "number"]),
        _record(2, [1, 0, 1], ["object", "number", "size"]),
        {"k": 2, "questions": []},  # no questions: not an image we can score
    ]
    scores = conceptmix_scores(records)
    k1, k2 = scores["per_k"][1], scores["per_k"][2]
    assert k1["images"] == 4 and k1["proportion_all_correct"]["p"] == 0.5
    assert k1["concept_accuracy"]["p"] == 5 / 8 and k1["grading_errors"] == 1
    assert k2["images"] == 2 and k2["proportion_all_correct"]["p"] == 0.5 and k2["concept_accuracy"]["p"] == 5 / 6
    by_cat = scores["by_category"]
    assert set(by_cat) == {"object", "color", "style", "spatial"}  # k=1 only
    assert by_cat["color"]["question_accuracy"]["p"] == 0.5 and by_cat["color"]["images_all_correct"]["n"] == 2
    assert by_cat["object"]["question_accuracy"]["p"] == 0.75
    assert category_breakdown(records, k=None)["number"]["question_accuracy"]["n"] == 2
    out = plot_scores({"render + fake": scores}, tmp_path / "plot.png")
    assert Image.open(out).size[0] > 100
