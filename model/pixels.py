"""The pixel transform, defined once for the shard loaders, `model predict` and `model export`: JPEG bytes
to a square uint8 RGB image (the test transform), the training crop and flip, and ImageNet normalisation
and its inverse. DALI's pipeline (model/data.py) reproduces it with the same constants.

Batches stay uint8 until they reach the device (`model_input`): a quarter of float32's bytes through the
DataLoader's workers and the host-to-device copy, normalised where the network runs, as the ONNX graph
(model/export.py) does in its first step."""

import io

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
"""What Pillow raises on bytes it cannot decode (empty, not an image, corrupt, truncated, oversized)."""


def load_pixels(data: bytes, size: int) -> np.ndarray:
    """The test transform: uint8 [size, size, 3] RGB, square-resized (JPEG draft mode: the decoder
    downscales by 1/2..1/8 on the fly, then bilinear). Raises one of DECODE_ERRORS when the bytes do not
    decode."""
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (size, size))
    return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


def augment(pixels: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """The training transform after load_pixels: a random `crop`-sided square, flipped left-right half the
    time."""
    top, left = rng.integers(0, pixels.shape[0] - crop + 1, size=2)
    pixels = pixels[top : top + crop, left : left + crop]
    return pixels[:, ::-1] if rng.random() < 0.5 else pixels


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 ImageNet-normalised, in one vectorised pass per batch."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return (images.float() - mean) / std


def model_input(images: torch.Tensor, device, channels_last: bool = False) -> torch.Tensor:
    """A batch as the network takes it, on `device`: uint8 images (the CPU loader's, `model predict`'s) are
    moved as bytes and normalised there; float ones (DALI's, normalised on the GPU) pass as they are."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalise(images)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def as_picture(image: torch.Tensor) -> np.ndarray:
    """One [3, H, W] input, uint8 or ImageNet-normalised, as the [H, W, 3] picture in 0..1 the network saw."""
    if image.dtype == torch.uint8:
        return image.cpu().permute(1, 2, 0).numpy() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image.cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
