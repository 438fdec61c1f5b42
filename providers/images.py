"""Text-to-image backends for ConceptMix: `render` (Pillow), `openai-images:<model>`, `diffusers:<local path>`.

Design choices:
- `render` draws the *configuration*, not the prompt: every object is a labelled shape with its color,
  shape, texture, count and size, placed by its relations (left/right/above/below/top/bottom/behind/in front
  of/inside/outside), with a style filter and a style banner. It is deterministic (same configuration,
  same bytes), needs no model, and gives tests and offline demos real PNG files to grade.
- `openai-images:<model>` calls the images API through the `openai` client, which honours OPENAI_BASE_URL
  and OPENAI_API_KEY (any OpenAI-compatible server works); the client's own retries are the retry policy.
- `diffusers:<path>` loads a pipeline from a local folder only (`local_files_only=True`; never a hub name)
  and exists only when `diffusers` is importable.
- Images are stored as `<blake2b-128 of the bytes>.<ext>` in one folder, so an identical image is stored once
  and a store row only references the file name.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps, PngImagePlugin

from skillweave.errors import ConfigError, ModelCallError

IMAGE_SPECS = "render, openai-images:<model> or diffusers:<local folder>"


@dataclass
class GeneratedImage:
    data: bytes
    model: str
    ext: str = "png"
    meta: dict[str, Any] = field(default_factory=dict)


class ImageBackend(Protocol):
    spec: str

    def generate(self, prompt: str, config: dict | None = None, seed: int = 0) -> GeneratedImage: ...


def image_backend(spec: str, **options: Any) -> ImageBackend:
    """Parse an image model spec into a backend (raises ConfigError naming the spec and the choices)."""
    name, _, arg = spec.partition(":")
    if name == "render" and not arg:
        return RenderBackend(**options)
    if name == "openai-images" and arg:
        return OpenAIImagesBackend(arg, **options)
    if name == "diffusers" and arg:
        return DiffusersBackend(arg, **options)
    raise ConfigError(f"unknown image model spec '{spec}'; expected {IMAGE_SPECS}")


# ---- storage --------------------------------------------------------------------------------------------
def image_folder(db_path: str) -> Path:
    """Images live beside the store: `<db stem>-images/` next to the SQLite file."""
    path = Path(db_path if db_path != ":memory:" else "skillweave.db").expanduser().resolve()
    return path.with_name(f"{path.stem}-images")


def save_image(image: GeneratedImage, folder: Path) -> str:
    """Write the bytes under their content hash (once) and return the file name."""
    digest = hashlib.blake2b(image.data, digest_size=16).hexdigest()
    name = f"{digest}.{image.ext}"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    if not target.exists():
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(image.data)
        tmp.replace(target)
    return name


def image_data_url(path: Path) -> str:
    """A base64 data URL for a VLM image content part."""
    mime = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(
        path.suffix.lstrip(".").lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


# ---- render ---------------------------------------------------------------------------------------------
COLORS = {"red": (214, 40, 40), "blue": (40, 90, 214), "yellow": (240, 210, 40), "green": (50, 160, 70),
          "purple": (130, 60, 180), "orange": (245, 140, 30), "pink": (240, 130, 180), "brown": (130, 80, 40),
          "black": (25, 25, 25), "white": (250, 250, 250), "gray": (140, 140, 140)}
SIZES = {"tiny": 0.45, "huge": 1.8}
STYLE_BACKGROUNDS = {"pop art": (255, 230, 0), "graffiti": (180, 180, 170), "manga": (255, 255, 255),
                     "surrealism": (200, 220, 255), "impressionism": (235, 225, 200), "watercolor": (245, 240, 230)}
BASE = 80  # px side of a normal-size instance before fitting


@dataclass
class _Group:
    """One object (all its instances) as a box on the canvas."""

    obj: dict
    x: float
    y: float
    scale: float
    z: float

    @property
    def count(self) -> int:
        try:
            return max(1, int(self.obj.get("number") or 1))
        except ValueError:
            return 1

    @property
    def unit(self) -> tuple[float, float]:
        w = BASE * self.scale * (1.5 if self.obj.get("shape") == "rectangle" else 1.0)
        return w, BASE * self.scale

    @property
    def size(self) -> tuple[float, float]:
        w, h = self.unit
        return self.count * w + (self.count - 1) * 0.2 * w, h


def _layout(config: dict) -> list[_Group]:
    objects = config.get("objects") or []
    groups: dict[str, _Group] = {}
    cursor = 0.0
    for i, o in enumerate(objects):  # default: side by side, left to right, a gap between groups
        group = _Group(o, 0.0, 0.0, SIZES.get(str(o.get("size")), 1.0), float(i))
        group.x = cursor + group.size[0] / 2
        cursor += group.size[0] + 0.6 * BASE
        groups[str(o.get("id"))] = group
    for rel in config.get("relation") or []:
        a, b = groups.get(str(rel.get("ObjectA_id"))), groups.get(str(rel.get("ObjectB_id")))
        if a is None or b is None or a is b:
            continue
        (aw, ah), (bw, bh) = a.size, b.size
        name = rel.get("name")
        if name in ("left", "right"):
            a.x, a.y = b.x + (-1 if name == "left" else 1) * (aw + bw) / 2 * 1.3, b.y
        elif name in ("above", "below", "top", "bottom"):
            gap = 0 if name in ("top", "bottom") else 0.5 * BASE
            sign = -1 if name in ("above", "top") else 1
            a.x, a.y = b.x, b.y + sign * ((ah + bh) / 2 + gap)
        elif name in ("behind", "in front of"):
            sign = -1 if name == "behind" else 1
            a.x, a.y, a.z = b.x - sign * 0.35 * bw, b.y + sign * 0.25 * bh, b.z + sign * 0.5
        elif name == "inside":
            b.scale = max(b.scale, 2.0 * a.scale * a.count)
            a.x, a.y, a.z = b.x, b.y, b.z + 0.5
        elif name == "outside":
            a.x, a.y = b.x + (aw + bw) / 2 + BASE, b.y
    return sorted(groups.values(), key=lambda g: g.z)


def _heart(x0: float, y0: float, w: float, h: float) -> list[tuple[float, float]]:
    points = []
    for i in range(60):
        t = 2 * math.pi * i / 60
        px = 16 * math.sin(t) ** 3
        py = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x0 + w / 2 + px / 34 * w, y0 + h / 2 - py / 30 * h))
    return points


def _fill_color(obj: dict) -> tuple[int, int, int]:
    if obj.get("color") in COLORS:
        return COLORS[obj["color"]]
    digest = hashlib.blake2b(str(obj.get("item")).encode(), digest_size=3).digest()
    return tuple(90 + d % 120 for d in digest)  # a muted color of its own per item name


def _draw_instance(layer: Image.Image, box: tuple[float, float, float, float], obj: dict, outline_width: int) -> None:
    draw = ImageDraw.Draw(layer)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    rgb = _fill_color(obj)
    texture = obj.get("texture")
    fill = (*rgb, 120) if texture == "glass" else (*rgb, 255)
    outline = (20, 20, 20, 255)
    shape = obj.get("shape")
    if texture == "fluffy":  # a ring of small puffs around the outline
        r = max(2.0, min(w, h) * 0.08)
        for i in range(24):
            t = 2 * math.pi * i / 24
            cx, cy = x0 + w / 2 + math.cos(t) * w / 2, y0 + h / 2 + math.sin(t) * h / 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*rgb, 255))
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=outline_width)
    elif shape in ("square", "rectangle"):
        draw.rectangle(box, fill=fill, outline=outline, width=outline_width)
    elif shape == "triangle":
        draw.polygon([(x0 + w / 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=outline, width=outline_width)
    elif shape == "heart":
        draw.polygon(_heart(x0, y0, w, h), fill=fill, outline=outline, width=outline_width)
    else:  # no shape concept: a rounded blob
        draw.rounded_rectangle(box, radius=min(w, h) * 0.3, fill=fill, outline=outline, width=outline_width)
    if texture == "metallic":
        for i in range(1, 6):
            xi = x0 + w * i / 6
            shade = 255 if i % 2 else 200
            draw.line((xi, y0 + h * 0.15, xi, y1 - h * 0.15), fill=(shade, shade, shade, 200), width=max(1, int(w / 30)))
    elif texture == "glass":
        draw.line((x0 + w * 0.25, y0 + h * 0.2, x0 + w * 0.45, y0 + h * 0.2), fill=(255, 255, 255, 255),
                  width=max(2, int(w / 20)))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_configuration(config: dict, prompt: str = "", size: int = 512) -> bytes:
    """Draw a ConceptMix configuration as a PNG (deterministic bytes for a given configuration)."""
    style = config.get("style")
    canvas = Image.new("RGBA", (size, size), (*STYLE_BACKGROUNDS.get(style, (236, 240, 244)), 255))
    groups = _layout(config)
    margin, banner = 24.0, 28.0
    if groups:  # fit every group into the canvas with one uniform scale
        xs0 = [g.x - g.size[0] / 2 for g in groups]
        xs1 = [g.x + g.size[0] / 2 for g in groups]
        ys0 = [g.y - g.size[1] / 2 for g in groups]
        ys1 = [g.y + g.size[1] / 2 + 18 for g in groups]  # room for labels
        span_x, span_y = max(xs1) - min(xs0), max(ys1) - min(ys0)
        fit = min((size - 2 * margin) / span_x, (size - 2 * margin - banner) / span_y, 2.0)
        off_x = margin + (size - 2 * margin - span_x * fit) / 2 - min(xs0) * fit
        off_y = margin + banner + (size - 2 * margin - banner - span_y * fit) / 2 - min(ys0) * fit
        outline_width = 4 if style in ("cartoon", "manga", "ink", "pop art") else 2
        font = _font(max(10, int(12 * min(fit, 1.5))))
        labels: list[tuple[float, float, str]] = []
        for g in groups:
            unit_w, unit_h = (d * fit for d in g.unit)
            gx0 = g.x * fit + off_x - g.size[0] * fit / 2
            gy0 = g.y * fit + off_y - unit_h / 2
            layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            for i in range(g.count):
                x0 = gx0 + i * unit_w * 1.2
                _draw_instance(layer, (x0, gy0, x0 + unit_w, gy0 + unit_h), g.obj, outline_width)
            labels.append((g.x * fit + off_x, gy0 + unit_h + 3, str(g.obj.get("item", "?"))))
            canvas = Image.alpha_composite(canvas, layer)
        draw = ImageDraw.Draw(canvas)
        for x, y, label in labels:  # labels last, so an object in front never hides a name
            draw.text((x, y), label, fill=(0, 0, 0, 255), font=font, anchor="mt", stroke_width=2,
                      stroke_fill=(255, 255, 255, 255))
    image = canvas.convert("RGB")
    image = _apply_style(image, style)
    if style:
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, size, banner), fill=(255, 255, 255))
        draw.text((8, banner / 2), f"style: {style}", fill=(0, 0, 0), font=_font(14), anchor="lm")
    info = PngImagePlugin.PngInfo()
    if prompt:
        info.add_text("prompt", prompt)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _apply_style(image: Image.Image, style: str | None) -> Image.Image:
    if style == "sketch":
        return ImageOps.invert(image.convert("L").filter(ImageFilter.FIND_EDGES)).convert("RGB")
    if style == "pixel art":
        return image.resize((64, 64), Image.Resampling.NEAREST).resize(image.size, Image.Resampling.NEAREST)
    if style == "watercolor":
        return image.filter(ImageFilter.GaussianBlur(2))
    if style == "oil painting":
        return image.filter(ImageFilter.ModeFilter(7))
    if style == "ink":
        return ImageOps.posterize(image.convert("L"), 2).convert("RGB")
    if style in ("pop art", "graffiti"):
        return ImageOps.posterize(image, 2)
    if style == "abstract":
        return image.filter(ImageFilter.EMBOSS)
    if style == "cubism":
        return image.resize((24, 24), Image.Resampling.BILINEAR).resize(image.size, Image.Resampling.NEAREST)
    if style == "expressionism":
        return ImageOps.autocontrast(image.filter(ImageFilter.EDGE_ENHANCE_MORE))
    return image


class RenderBackend:
    """Draws the configuration with Pillow (no model); see `render_configuration`."""

    spec = "render"

    def __init__(self, size: int = 512):
        self.size = size

    def generate(self, prompt: str, config: dict | None = None, seed: int = 0) -> GeneratedImage:
        if not config or not config.get("objects"):
            raise ConfigError("the render backend draws a configuration; this prompt has none "
                              "(import it with its refined-config file, or use another --image-model)")
        return GeneratedImage(render_configuration(config, prompt, self.size), "render")


# ---- OpenAI images API ----------------------------------------------------------------------------------
class OpenAIImagesBackend:
    """The images API of OpenAI or any compatible server (OPENAI_BASE_URL, OPENAI_API_KEY)."""

    def __init__(self, model: str, size: str = "1024x1024", client: Any = None, timeout: float = 180.0):
        self.spec = f"openai-images:{model}"
        self.model, self.size, self.timeout = model, size, timeout
        self._client = client

    def client(self) -> Any:
        if self._client is None:
            if not os.environ.get("OPENAI_API_KEY"):
                raise ConfigError(f"{self.spec} needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server)")
            from openai import OpenAI

            self._client = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL") or None, timeout=self.timeout)
        return self._client

    def generate(self, prompt: str, config: dict | None = None, seed: int = 0) -> GeneratedImage:
        kwargs: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": 1, "size": self.size}
        if not self.model.startswith("gpt-image"):  # gpt-image models always return base64 and reject the flag
            kwargs["response_format"] = "b64_json"
        try:
            response = self.client().images.generate(**kwargs)
            item = response.data[0]
            if getattr(item, "b64_json", None):
                data = base64.b64decode(item.b64_json)
            else:
                import httpx

                data = httpx.get(item.url, timeout=self.timeout).raise_for_status().content
        except ConfigError:
            raise
        except Exception as exc:  # the client already retried; surface one typed error
            raise ModelCallError(f"{self.spec} failed: {type(exc).__name__}: {exc}") from exc
        meta = {"revised_prompt": getattr(item, "revised_prompt", None)}
        return GeneratedImage(data, self.spec, _sniff_ext(data), meta)


def _sniff_ext(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "png"


# ---- diffusers (optional) -------------------------------------------------------------------------------
class DiffusersBackend:
    """A local diffusers pipeline folder; loaded once, seeded per record."""

    _pipelines: dict[str, Any] = {}

    def __init__(self, path: str, steps: int = 30, guidance_scale: float | None = None):
        if importlib.util.find_spec("diffusers") is None:
            raise ConfigError(f"diffusers:{path} needs the optional 'diffusers' package; "
                              "install it with: pip install diffusers")
        if not Path(path).expanduser().is_dir():
            raise ConfigError(f"diffusers:{path} must be a local pipeline folder (hub names are not loaded)")
        self.spec = f"diffusers:{path}"
        self.path, self.steps, self.guidance_scale = str(Path(path).expanduser()), steps, guidance_scale

    def generate(self, prompt: str, config: dict | None = None, seed: int = 0) -> GeneratedImage:
        import torch
        from diffusers import DiffusionPipeline

        pipe = self._pipelines.get(self.path)
        if pipe is None:
            pipe = DiffusionPipeline.from_pretrained(self.path, local_files_only=True)
            pipe = pipe.to("cuda" if torch.cuda.is_available() else "cpu")
            self._pipelines[self.path] = pipe
        kwargs: dict[str, Any] = {"num_inference_steps": self.steps,
                                  "generator": torch.Generator(device="cpu").manual_seed(seed)}
        if self.guidance_scale is not None:
            kwargs["guidance_scale"] = self.guidance_scale
        image = pipe(prompt, **kwargs).images[0]
        out = io.BytesIO()
        image.save(out, format="PNG")
        return GeneratedImage(out.getvalue(), self.spec, "png", {"steps": self.steps, "seed": seed})
