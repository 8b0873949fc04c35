"""The probe set: fixed texts and images, made without downloads, that every artifact is measured on.

Texts: captions, prompts, single words, Unicode, emoji, HTML entities, whitespace runs and texts
far past 77 tokens. Images: real photographs that scikit-image ships in its wheel (public-domain
or CC0 test images, see scikit-image's data/README.txt), and generated ones: rendered words,
shapes, gradients, noise, extreme aspect ratios, and every image mode the serving path accepts
(RGB, RGBA, palette with transparency, greyscale, greyscale+alpha, 1-bit, CMYK JPEG, 16-bit PNG,
WebP, GIF, BMP, EXIF-rotated JPEG). Everything is seeded: the same bytes on every machine.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ZERO_SHOT_WORDS = ("dog", "cat", "car", "tree", "house", "pizza", "guitar", "boat", "apple", "clock", "shoe", "bird")
ZERO_SHOT_PROMPT = 'a photo of the word "{}"'

# Text-similarity sanity check: (anchor, synonym, unrelated) in one template, so that surface form
# alone (a random text tower) cannot tell the synonym from the unrelated word; CLIP's text space can.
SIMILARITY_TEMPLATE = "a photo of {}"
SIMILARITY_TRIPLETS = (
    ("a dog", "a puppy", "a truck"),
    ("a cat", "a kitten", "a bridge"),
    ("a car", "an automobile", "a banana"),
    ("the ocean", "the sea", "a desert"),
    ("a house", "a home", "a violin"),
    ("a bicycle", "a bike", "a volcano"),
    ("a boat", "a ship", "a pencil"),
    ("a woman", "a lady", "a tractor"),
    ("a child", "a kid", "a microwave"),
    ("a road", "a street", "a giraffe"),
    ("a stone", "a rock", "a sandwich"),
    ("a plane", "an airplane", "a carrot"),
    ("a sofa", "a couch", "a glacier"),
    ("a rabbit", "a bunny", "a laptop"),
    ("a cup", "a mug", "a tiger"),
    ("a forest", "the woods", "a keyboard"),
)


def similarity_texts() -> list[str]:
    """Every text of the similarity triplets, anchor, synonym, unrelated, triplet after triplet."""
    return [SIMILARITY_TEMPLATE.format(item) for triplet in SIMILARITY_TRIPLETS for item in triplet]

_CAPTIONS = (
    "a photo of a dog",
    "a photo of a cat",
    "an astronaut floating above the earth",
    "a cup of coffee on a wooden table",
    "a red sports car parked on the street",
    "a bowl of fresh fruit",
    "two people riding horses on a beach at sunset",
    "a close-up of a ginger cat looking at the camera",
    "a rocket launching into a clear blue sky",
    "a black and white photo of a man with a camera",
    "the surface of the moon",
    "a diagram of a neural network",
    "a handwritten page of notes",
    "a city skyline at night with reflections in the river",
    "a bicycle leaning against a brick wall",
    "a plate of spaghetti with tomato sauce",
    "a snowy mountain under a starry sky",
    "an aerial view of a forest",
    "a child playing with a red ball in the park",
    "a vintage typewriter on a desk",
)
_SINGLE_WORDS = ("dog", "cat", "astronaut", "coffee", "rocket", "moon", "car", "tree", "music", "ocean", "x", "42")
_UNICODE = (
    "naïve café déjà vu",
    "日本語のテキスト: 東京の夜景",
    "Привет, мир",
    "مرحبا بالعالم",
    "한국어 문장입니다",
    "emoji 🐶🚀👍🏽 and 🇫🇷 flags",
    "Ünïcödé ÀÉÎ ß ﬁ ligature",
    "mojibake Ã©tÃ© repaired by ftfy",
    "math ∑ x² ≤ ∞ and π ≈ 3.14159",
    "ＦＵＬＬＷＩＤＴＨ letters",
)
_MARKUP_AND_SPACING = (
    "&amp;lt;b&amp;gt; bold &quot;quoted&quot; &#39;x&#39;",
    "<p>an HTML <em>paragraph</em></p>",
    "tabs\tand\nnewlines   and    runs   of spaces",
    "   leading and trailing spaces   ",
    "ALL CAPS SHOUTING",
    "it's we're they'll I'd can't",
    "user@example.com https://example.com/path?q=1",
    "C++ / C# / F# — en dash – and em dash",
    "<start_of_text> injected special tokens <end_of_text>",
    "a" * 300,
)


def _long_texts() -> tuple[str, ...]:
    words = " ".join(_CAPTIONS)
    return (
        words,  # far past 77 tokens
        "word " * 200,
        "🐶" * 120,
        ", ".join(str(i) for i in range(150)),
    )


def probe_texts() -> list[str]:
    texts = list(_CAPTIONS + _SINGLE_WORDS + _UNICODE + _MARKUP_AND_SPACING + _long_texts())
    texts += [ZERO_SHOT_PROMPT.format(word) for word in ZERO_SHOT_WORDS]
    return texts


@dataclass(frozen=True)
class ProbeImage:
    name: str
    data: bytes


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_word(word: str, size: tuple[int, int] = (320, 224)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = _font(72)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    draw.text(((size[0] - (right - left)) / 2 - left, (size[1] - (bottom - top)) / 2 - top), word, fill="black", font=font)
    return image


def skimage_photo_dir() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(list(spec.submodule_search_locations)[0]) / "data"
    return directory if directory.is_dir() else None


_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
    "camera.png", "moon.png", "horse.png", "motorcycle_left.png", "page.png", "coins.png", "brick.png", "text.png",
)


def photographs() -> list[ProbeImage]:
    directory = skimage_photo_dir()
    if directory is None:
        return []
    return [ProbeImage(f"photo-{name}", (directory / name).read_bytes()) for name in _PHOTOS if (directory / name).is_file()]


def generated_images(seed: int = 0) -> list[ProbeImage]:
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    x = np.linspace(0, 255, 512, dtype=np.float32)
    gradient = Image.fromarray(np.stack([np.tile(x, (384, 1)), np.tile(x[::-1], (384, 1)), np.full((384, 512), 128.0)], -1).astype(np.uint8))
    shapes = Image.new("RGB", (400, 300), (30, 90, 160))
    draw = ImageDraw.Draw(shapes)
    draw.ellipse((40, 40, 200, 200), fill=(240, 200, 20))
    draw.rectangle((220, 80, 370, 260), fill=(200, 30, 40))
    draw.polygon([(60, 280), (150, 210), (240, 280)], fill=(20, 160, 60))
    rgba = Image.fromarray(rng.integers(0, 256, (300, 200, 4), dtype=np.uint8), "RGBA")
    sixteen = Image.fromarray((np.outer(np.arange(200), np.arange(300)) * 1.09).astype(np.uint16))
    rotated = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(rotated).rectangle((0, 0, 160, 120), fill="red")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW when displayed; served as stored, like open_clip
    images = [
        ProbeImage("noise-jpeg", _encode(noise, "JPEG", quality=90)),
        ProbeImage("gradient-png", _encode(gradient, "PNG")),
        ProbeImage("shapes-png", _encode(shapes, "PNG")),
        ProbeImage("rgba-png", _encode(rgba, "PNG")),
        ProbeImage("palette-transparent-png", _encode(shapes.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0)),
        ProbeImage("greyscale-png", _encode(gradient.convert("L"), "PNG")),
        ProbeImage("greyscale-alpha-png", _encode(shapes.convert("LA"), "PNG")),
        ProbeImage("bilevel-png", _encode(shapes.convert("1"), "PNG")),
        ProbeImage("cmyk-jpeg", _encode(shapes.convert("CMYK"), "JPEG", quality=92)),
        ProbeImage("sixteen-bit-png", _encode(sixteen, "PNG")),
        ProbeImage("webp", _encode(gradient, "WEBP", quality=85)),
        ProbeImage("gif", _encode(shapes, "GIF")),
        ProbeImage("bmp", _encode(shapes, "BMP")),
        ProbeImage("exif-rotated-jpeg", _encode(rotated, "JPEG", exif=exif)),
        ProbeImage("tiny-2x3-png", _encode(Image.fromarray(rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)), "PNG")),
        ProbeImage("wide-40to1-png", _encode(Image.fromarray(rng.integers(0, 256, (60, 2400, 3), dtype=np.uint8)), "PNG")),
        ProbeImage("tall-20to1-jpeg", _encode(Image.fromarray(rng.integers(0, 256, (1000, 50, 3), dtype=np.uint8)), "JPEG")),
        ProbeImage("large-1024x768-jpeg", _encode(noise.resize((1024, 768)), "JPEG", quality=85)),
    ]
    images += [ProbeImage(f"word-{word}", _encode(render_word(word), "PNG")) for word in ZERO_SHOT_WORDS]
    return images


def probe_images(seed: int = 0) -> list[ProbeImage]:
    return photographs() + generated_images(seed)
