"""Inference inputs -> one tensor of samples as the training dataset yields them.

The API runs this at submit time (a bad input is a 400 naming `inputs`, an oversized one
a 413) and the worker runs it again to predict, so both agree on every input. A JSON
nested list is one sample or a batch in the dataset's sample shape, with the dataset's
values (images as floats in [0, 1], token ids as integers). Base64 PNG / JPEG images are
decoded to the model's channel count and resized to the dataset's image size, so they
arrive exactly like dataset images; the worker then applies the training job's eval-time
transforms (Resize, CenterCrop, Normalize) to either kind.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from shared.config import Settings
from shared.errors import LimitExceeded, SpecError
from shared.spec import DataSpec
from shared.spec.data import raw_sample_shape

IMAGE_FORMATS = ("PNG", "JPEG")


@dataclass(frozen=True)
class InputLimits:
    """Operator limits on one request's inputs."""

    max_samples: int = 256
    max_image_pixels: int = 2048 * 2048
    max_image_side: int = 4096
    max_image_aspect: float = 16.0

    @classmethod
    def of(cls, settings: Settings) -> InputLimits:
        """The operator's limits from settings."""
        return cls(
            max_samples=settings.max_infer_samples,
            max_image_pixels=settings.max_image_pixels,
            max_image_side=settings.max_image_side,
            max_image_aspect=settings.max_image_aspect,
        )


def inputs_tensor(raw: Any, data: DataSpec, limits: InputLimits) -> torch.Tensor:
    """(N, *sample shape) float32 (int64 for token models), or SpecError / LimitExceeded."""
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], str)):
        images = [raw] if isinstance(raw, str) else raw
        return _images_tensor(images, data, limits)
    return _values_tensor(raw, data, limits)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _values_tensor(raw: Any, data: DataSpec, limits: InputLimits) -> torch.Tensor:
    expected = raw_sample_shape(data)
    want = (
        f"one sample of shape {_shape_text(expected)} or a batch of shape "
        f"{_shape_text(('N', *expected))}"  # type: ignore[arg-type]
    )
    if not isinstance(raw, list) or not raw:
        raise SpecError.at("inputs", f"expected a JSON nested list: {want}")
    try:
        # float64 first: integers and floats both parse, bools and strings do not.
        values = torch.tensor(raw, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        problem = f"not a rectangular nested list of numbers; expected {want}"
        raise SpecError.at("inputs", problem) from None
    if tuple(values.shape) == expected:
        values = values.unsqueeze(0)
    if tuple(values.shape[1:]) != expected:
        got = _shape_text(tuple(values.shape))
        raise SpecError.at("inputs", f"shape {got} does not fit the model: expected {want}")
    _check_count(values.shape[0], limits)
    if not bool(torch.isfinite(values).all()):
        raise SpecError.at("inputs", "holds NaN or infinite values")
    if data.input_kind == "tokens":
        if not bool((values == values.round()).all()):
            raise SpecError.at("inputs", "token ids must be integers")
        low, high = values.min().item(), values.max().item()
        if low < 0 or high >= data.vocab_size:
            problem = f"token ids must be in [0, {data.vocab_size}), got {low:g} .. {high:g}"
            raise SpecError.at("inputs", problem)
        return values.to(torch.int64)
    return values.to(torch.float32)


def _check_count(n: int, limits: InputLimits) -> None:
    if n > limits.max_samples:
        raise LimitExceeded(
            f"inputs: {n} samples; at most {limits.max_samples} per request",
            details=[{"loc": "inputs", "msg": f"at most {limits.max_samples} samples"}],
        )


def _images_tensor(images: list[Any], data: DataSpec, limits: InputLimits) -> torch.Tensor:
    if not data.is_image:
        shape = _shape_text(raw_sample_shape(data))
        raise SpecError.at(
            "inputs",
            f"images need a model trained on images; this one takes {data.dataset} samples "
            f"of shape {shape}: send a JSON nested list",
        )
    _check_count(len(images), limits)
    channels, height, width = raw_sample_shape(data)
    if channels not in (1, 3):
        raise SpecError.at(
            "inputs",
            "images need a model with 1 (gray) or 3 (RGB) input channels; this one takes "
            f"{channels}: send a JSON nested list of shape "
            f"{_shape_text((channels, height, width))}",
        )
    mode = "L" if channels == 1 else "RGB"
    samples = []
    for i, text in enumerate(images):
        loc = f"inputs[{i}]"
        if not isinstance(text, str):
            raise SpecError.at(loc, "expected a base64 PNG or JPEG string")
        pixels = _decode_image(text, loc, limits).convert(mode)
        array = np.asarray(pixels, dtype=np.uint8)
        sample = torch.from_numpy(array.copy()).float().div_(255.0)
        sample = sample.unsqueeze(0) if mode == "L" else sample.permute(2, 0, 1)
        if tuple(sample.shape[1:]) != (height, width):
            # As the dataset's images are stored: the job's own transforms come after.
            sample = F.interpolate(
                sample.unsqueeze(0), size=(height, width), mode="bilinear",
                align_corners=False, antialias=True,
            ).squeeze(0).clamp_(0.0, 1.0)  # fmt: skip
        samples.append(sample)
    return torch.stack(samples).contiguous()


def _check_size(size: tuple[int, int], loc: str, limits: InputLimits) -> None:
    """From the header, before any pixel is decoded: total pixels (decompression bombs),
    each side and the aspect ratio (a 1 x 4,194,304 strip is within the pixels but costs
    seconds to decode and resize to a model's input)."""
    w, h = size
    problems = []
    if w * h > limits.max_image_pixels:
        problems.append(f"at most {limits.max_image_pixels:,} pixels (TRAINYARD_MAX_IMAGE_PIXELS)")
    if max(w, h) > limits.max_image_side:
        problems.append(
            f"at most {limits.max_image_side:,} pixels a side (TRAINYARD_MAX_IMAGE_SIDE)"
        )
    if min(w, h) == 0 or max(w, h) / min(w, h) > limits.max_image_aspect:
        problems.append(
            f"an aspect ratio of at most {limits.max_image_aspect:g}:1 (TRAINYARD_MAX_IMAGE_ASPECT)"
        )
    if problems:
        raise LimitExceeded(
            f"{loc}: image is {w}x{h}; " + "; ".join(problems),
            details=[{"loc": loc, "msg": "image too large"}],
        )


def _decode_image(text: str, loc: str, limits: InputLimits) -> Image.Image:
    if text.startswith("data:"):  # a data URL as a browser writes it
        text = text.partition(",")[2]
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError.at(loc, "not valid base64") from None
    try:
        image = Image.open(io.BytesIO(blob), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own header check, far past ours
        raise LimitExceeded(
            f"{loc}: image too large; at most {limits.max_image_pixels:,} pixels",
            details=[{"loc": loc, "msg": "image too large"}],
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise SpecError.at(loc, "not a PNG or JPEG image") from None
    _check_size(image.size, loc, limits)
    try:
        image.load()
    # Pillow raises several kinds for a crafted file (SyntaxError from a bad chunk).
    except (OSError, ValueError, SyntaxError, EOFError, struct.error):
        raise SpecError.at(loc, "the image data is truncated or corrupt") from None
    return image
