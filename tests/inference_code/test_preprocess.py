import io

import numpy as np
import open_clip
import pytest
from PIL import Image

from inference_code.errors import RequestError
from clip_core.limits import ServingLimits
from inference_code.preprocess import ImagePreprocessor


@pytest.fixture(scope="module")
def open_clip_transform():
    _, _, transform = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained=None)
    return transform


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_matches_open_clip_transform_on_every_probe_image(probe_images, open_clip_transform):
    preprocessor = ImagePreprocessor()
    modes = set()
    for probe in probe_images:
        with Image.open(io.BytesIO(probe.data)) as image:
            modes.add(image.mode)
            expected = open_clip_transform(image).numpy()
        actual = preprocessor(probe.data)
        assert actual.shape == (3, 224, 224) and actual.dtype == np.float32
        assert np.abs(actual - expected).max() <= 1e-5, probe.name
    assert {"RGB", "RGBA", "P", "L", "LA", "1", "CMYK", "I;16"} <= modes


def test_non_antialiased_resize_differs_from_reference(probe_images, open_clip_transform):
    """The comparison above can fail: a resize without antialiasing is far off on a large image."""
    import torch
    import torchvision.transforms.functional as F

    probe = next(p for p in probe_images if p.name == "large-1024x768-jpeg")
    with Image.open(io.BytesIO(probe.data)) as image:
        expected = open_clip_transform(image).numpy()
        tensor = F.pil_to_tensor(image.convert("RGB")).float() / 255
    resized = F.center_crop(F.resize(tensor, 224, antialias=False, interpolation=F.InterpolationMode.BICUBIC), 224)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN)[:, None, None]
    std = torch.tensor(open_clip.OPENAI_DATASET_STD)[:, None, None]
    assert np.abs(((resized - mean) / std).numpy() - expected).max() > 0.1


def _error(preprocessor, data) -> RequestError:
    with pytest.raises(RequestError) as caught:
        preprocessor(data)
    return caught.value


def test_decompression_bomb_is_rejected_before_decoding():
    bomb = _png(Image.new("L", (10_000, 10_000)))  # ~100 KB compressed, 100 Mpx decoded
    assert len(bomb) < 200_000
    error = _error(ImagePreprocessor(limits=ServingLimits(max_image_pixels=40_000_000)), bomb)
    assert (error.status, error.code) == (413, "image_too_many_pixels")


def test_truncated_image_is_a_clear_400(probe_images):
    jpeg = next(p for p in probe_images if p.name == "large-1024x768-jpeg").data
    error = _error(ImagePreprocessor(), jpeg[: len(jpeg) // 2])
    assert (error.status, error.code) == (400, "corrupt_image")


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty_image"),
        (b"this is plain text, not an image", "not_an_image"),
        (b"%PDF-1.4 fake pdf", "not_an_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not_an_image"),  # signature, then garbage
    ],
)
def test_non_images_are_rejected(data, code):
    error = _error(ImagePreprocessor(), data)
    assert (error.status, error.code) == (400, code)


def test_unsupported_format_is_rejected():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "TIFF")
    error = _error(ImagePreprocessor(), buffer.getvalue())
    assert error.code == "not_an_image" and "JPEG" in error.message


def test_extreme_aspect_ratio_is_rejected():
    error = _error(ImagePreprocessor(), _png(Image.new("RGB", (5000, 10))))
    assert (error.status, error.code) == (400, "image_aspect_ratio")


def test_image_bytes_limit():
    data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)))
    error = _error(ImagePreprocessor(limits=ServingLimits(max_image_bytes=1000)), data)
    assert (error.status, error.code) == (413, "image_too_large")


# Decode work (issue 13): a progressive JPEG's cost is pixels x scans.
from tests.inference_code.hostile import many_scan_jpeg, progressive_jpeg  # noqa: E402


def test_jpeg_scan_count_reads_the_marker_stream(probe_images):
    from inference_code.preprocess import jpeg_scan_count

    assert jpeg_scan_count(progressive_jpeg(flat=False), stop_after=100) == 10  # libjpeg's YCbCr script
    baseline = next(p for p in probe_images if p.name == "large-1024x768-jpeg").data
    assert jpeg_scan_count(baseline, stop_after=100) == 1
    assert jpeg_scan_count(many_scan_jpeg(), stop_after=100) == 101  # stops counting past the limit
    assert jpeg_scan_count(many_scan_jpeg(), stop_after=10_000) == 2_010
    # a start-of-scan marker inside an APP segment (an EXIF thumbnail) is not a scan of this image
    app1 = b"\xff\xe1" + (2 + 6).to_bytes(2, "big") + b"\xff\xda\xff\xda\xff\xda"
    assert jpeg_scan_count(baseline[:2] + app1 + baseline[2:], stop_after=100) == 1
    assert jpeg_scan_count(b"not a jpeg", stop_after=100) == 0


def test_many_scan_jpeg_is_rejected_before_decoding():
    import time

    preprocessor = ImagePreprocessor(limits=ServingLimits(max_jpeg_scans=32))
    started = time.perf_counter()
    error = _error(preprocessor, many_scan_jpeg(size=2_000, repeats=5_000))
    assert (error.status, error.code) == (413, "image_too_complex")
    assert time.perf_counter() - started < 1.0  # header only: decoding it takes seconds


def test_ordinary_progressive_jpeg_is_still_accepted_and_identical(open_clip_transform):
    data = progressive_jpeg(size=300, flat=False)
    with Image.open(io.BytesIO(data)) as image:
        expected = open_clip_transform(image).numpy()
    np.testing.assert_array_equal(ImagePreprocessor()(data), expected)
