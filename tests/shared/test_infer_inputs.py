"""Inference inputs: JSON lists and base64 images, checked and turned into dataset samples."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import LimitExceeded, SpecError
from shared.infer_inputs import InputLimits, inputs_tensor
from shared.spec import DataSpec

DIGITS = DataSpec(dataset="digits")  # (1, 8, 8)
CIFAR_LIKE = DataSpec(dataset="fake", input_shape=[3, 4, 6])
TOKENS = DataSpec(dataset="synthetic", input_kind="tokens", input_shape=[5], vocab_size=7)
LIMITS = InputLimits(max_samples=8, max_image_pixels=10_000)


def _png(array: np.ndarray, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


def test_one_sample_gets_a_batch_dimension_and_a_batch_keeps_its_own() -> None:
    one = torch.rand(1, 8, 8)
    assert inputs_tensor(one.tolist(), DIGITS, LIMITS).shape == (1, 1, 8, 8)
    batch = torch.rand(3, 1, 8, 8)
    got = inputs_tensor(batch.tolist(), DIGITS, LIMITS)
    assert got.dtype == torch.float32 and torch.equal(got, batch)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([[0.0] * 8] * 8, "shape [8, 8] does not fit the model: expected one sample of shape "
         "[1, 8, 8] or a batch of shape [N, 1, 8, 8]"),
        ([[1.0, 2.0], [3.0]], "not a rectangular nested list of numbers"),
        ([["a"]], "not a rectangular nested list of numbers"),
        ({"x": 1}, "expected a JSON nested list"),
        ([], "expected a JSON nested list"),
    ],
)  # fmt: skip
def test_a_list_of_the_wrong_shape_names_the_shape_expected(raw: object, message: str) -> None:
    with pytest.raises(SpecError) as info:
        inputs_tensor(raw, DIGITS, LIMITS)
    assert message in info.value.message and info.value.details[0]["loc"] == "inputs"


def test_non_finite_values_and_too_many_samples_are_refused() -> None:
    sample = torch.rand(1, 8, 8)
    sample[0, 0, 0] = float("nan")
    with pytest.raises(SpecError, match="NaN or infinite"):
        inputs_tensor(sample.tolist(), DIGITS, LIMITS)
    with pytest.raises(LimitExceeded, match="9 samples; at most 8"):
        inputs_tensor(torch.rand(9, 1, 8, 8).tolist(), DIGITS, LIMITS)


def test_token_ids_must_be_integers_in_the_vocabulary() -> None:
    got = inputs_tensor([[0, 1, 2, 3, 6]], TOKENS, LIMITS)
    assert got.dtype == torch.int64 and got.tolist() == [[0, 1, 2, 3, 6]]
    with pytest.raises(SpecError, match=r"token ids must be in \[0, 7\), got 0 .. 7"):
        inputs_tensor([0, 1, 2, 3, 7], TOKENS, LIMITS)
    with pytest.raises(SpecError, match="must be integers"):
        inputs_tensor([0, 1, 2, 3, 1.5], TOKENS, LIMITS)


def test_a_png_becomes_the_dataset_sample_it_shows() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    got = inputs_tensor([_png(pixels)], DIGITS, LIMITS)
    assert got.shape == (1, 1, 8, 8)
    torch.testing.assert_close(got[0, 0], torch.from_numpy(pixels).float() / 255)


def test_images_are_converted_to_the_models_channels_and_size() -> None:
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :, 0] = 255  # pure red: luminance 0.299
    gray = inputs_tensor(_png(rgb), DIGITS, LIMITS)  # one string: one sample
    assert gray.shape == (1, 1, 8, 8)
    torch.testing.assert_close(gray, torch.full((1, 1, 8, 8), 76 / 255))
    color = inputs_tensor([_png(rgb[:, :, 0].copy(), "JPEG")], CIFAR_LIKE, LIMITS)
    assert color.shape == (1, 3, 4, 6)  # gray JPEG -> RGB, resized to 4 x 6
    data_url = "data:image/png;base64," + _png(rgb)
    assert inputs_tensor([data_url], CIFAR_LIKE, LIMITS).shape == (1, 3, 4, 6)


def test_bad_images_name_their_index() -> None:
    good = _png(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(SpecError) as info:
        inputs_tensor([good, "not base64!"], DIGITS, LIMITS)
    assert info.value.details[0]["loc"] == "inputs[1]" and "base64" in info.value.message
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    with pytest.raises(SpecError, match=r"inputs\[0\]: not a PNG or JPEG image"):
        inputs_tensor([base64.b64encode(gif.getvalue()).decode()], DIGITS, LIMITS)
    truncated = base64.b64encode(base64.b64decode(_png(np.eye(64, dtype=np.uint8)))[:60])
    with pytest.raises(SpecError, match="truncated or corrupt"):
        inputs_tensor([truncated.decode()], DIGITS, LIMITS)


def _header_only_png(width: int, height: int) -> str:
    """A PNG that claims a size in its header and holds no pixels at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    blob = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    return base64.b64encode(blob).decode()


def test_an_oversized_image_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("the pixels must not be decoded")

    wide = _png(np.zeros((10, 2000), dtype=np.uint8))  # 20,000 pixels > 10,000
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(LimitExceeded, match=r"inputs\[0\]: image is 2000x10; at most 10,000"):
        inputs_tensor([wide], DIGITS, LIMITS)
    # Past Pillow's own bomb limit (2 x 89M pixels) Image.open refuses first: still a 413.
    with pytest.raises(LimitExceeded, match=r"inputs\[0\]: image too large"):
        inputs_tensor([_header_only_png(20_000, 20_000)], DIGITS, LIMITS)


def test_images_need_one_or_three_channels() -> None:
    four = DataSpec(dataset="fake", input_shape=[4, 8, 8])
    with pytest.raises(
        SpecError, match=r"1 \(gray\) or 3 \(RGB\) input channels; this one takes 4"
    ):
        inputs_tensor([_png(np.zeros((8, 8), dtype=np.uint8))], four, LIMITS)


def test_images_for_a_model_that_takes_vectors_are_refused() -> None:
    with pytest.raises(SpecError, match="images need a model trained on images"):
        inputs_tensor([_png(np.zeros((8, 8), dtype=np.uint8))], TOKENS, LIMITS)


def test_a_strip_within_the_pixels_is_refused_by_its_side_and_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1 x 4,194,304 is within 2048 x 2048 pixels but costs seconds to decode and resize:
    refused from the header by its longest side and its aspect ratio."""

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("the pixels must not be decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    limits = InputLimits()  # the defaults: 4,194,304 pixels, 4096 a side, 16:1
    with pytest.raises(LimitExceeded, match=r"image is 4194304x1; .* a side .* aspect ratio"):
        inputs_tensor([_header_only_png(4_194_304, 1)], DIGITS, limits)
    with pytest.raises(LimitExceeded, match=r"image is 100x2000; an aspect ratio of at most 16"):
        inputs_tensor([_header_only_png(100, 2000)], DIGITS, limits)
