"""The X-ray physics in one place: attenuation, pseudo-colour and compositing, for `synth` and `tip`.

Beer-Lambert: a ray through a stack of objects keeps T(E) = exp(-sum_i mu_i(E) t_i) of its photons, so
overlapping objects multiply transmissions, i.e. add in the log domain (-ln T). The generator works
in the log domain (per-material thickness maps, `attenuation`, then `colourise`); threat image
projection works on finished 8-bit scans, where each channel, normalised to [0, 1], is treated as a
transmission (as pyxvis and Rogers et al. do): the composite is the product of the bag and the
threat layer (`composite`), a threat layer is a threat scan divided by the bag behind it
(`divide_out`), and empty belt is white (transmission 1), so a layer over white is the layer itself.

Everything here is pure numpy/PIL: arrays in, arrays or images out.
"""

import numpy as np
from PIL import Image

MU = np.array(
    # attenuation per unit thickness at (low, high) energy; R = 1.33 organic, 1.75 inorganic, 2.4 metal
    [[0.40, 0.30], [0.70, 0.40], [1.20, 0.50]],
    dtype=np.float32,
)

# ---------------------------------------------------------------- attenuation (log domain)


def attenuation(thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-ln T at (low, high) energy from the (3, H, W) material thickness maps (organic, inorganic, metal)."""
    low = MU[0, 0] * thickness[0] + MU[1, 0] * thickness[1] + MU[2, 0] * thickness[2]
    high = MU[0, 1] * thickness[0] + MU[1, 1] * thickness[1] + MU[2, 1] * thickness[2]
    return low, high


def composite_log(*attenuations: np.ndarray) -> np.ndarray:
    """Stacked objects in the log domain: their attenuations (-ln T) add."""
    total = np.zeros(np.broadcast_shapes(*(np.shape(a) for a in attenuations)), dtype=np.float32)
    for a in attenuations:
        total = total + a
    return total


# ---------------------------------------------------------------- colour


def _hue_table() -> np.ndarray:
    """Hue (PIL's 0-255 scale) per quantised ratio index i, R = 1 + i / 100."""
    ratio = 1.0 + np.arange(256) / 100.0
    degrees = np.interp(ratio, [1.0, 1.4, 1.5, 1.65, 1.95, 2.2, 3.5], [24, 30, 95, 128, 165, 215, 235])
    return np.round(degrees * 255 / 360).astype(np.uint8)


_HUE = _hue_table()
_M = np.arange(256) / 255.0
_SATURATION = np.round(255 * (1 - _M**3)).astype(np.uint8)
_VALUE = np.round(255 * (1 - (1 - _M) ** 3)).astype(np.uint8)


def colourise(low: np.ndarray, high: np.ndarray, hue_shift: int = 0) -> Image.Image:
    """Pseudo-colour RGB image from the two attenuation maps (-ln T_low, -ln T_high).

    Hue from the material ratio R = ln T_low / ln T_high (orange organic, green inorganic, blue metal),
    saturation 1 - m^3 and value 1 - (1 - m)^3 with m the mean transmission: empty belt is white."""
    ratio = low / np.maximum(high, 1e-6)
    ratio_index = np.clip((ratio - 1.0) * 100.0, 0, 255).astype(np.uint8)
    mean_t = (np.exp(-low) + np.exp(-high)) * 0.5
    m_index = (mean_t * 255.0 + 0.5).astype(np.uint8)
    hue = (_HUE.astype(np.int16) + hue_shift).clip(0, 255).astype(np.uint8)[ratio_index]
    bands = [Image.fromarray(a) for a in (hue, _SATURATION[m_index], _VALUE[m_index])]
    return Image.merge("HSV", bands).convert("RGB")


# ---------------------------------------------------------------- compositing (transmission domain)


def to_transmission(pixels) -> np.ndarray:
    """8-bit scan (H, W, 3) as float32 transmissions in [0, 1]: 255 (empty belt) is 1."""
    return np.asarray(pixels, dtype=np.float32) * np.float32(1 / 255)


def to_pixels(transmission: np.ndarray) -> np.ndarray:
    """Float transmissions back to 8-bit pixels (rounded, clipped)."""
    return np.clip(transmission * 255.0 + 0.5, 0, 255).astype(np.uint8)


def composite(background: np.ndarray, *layers: np.ndarray) -> np.ndarray:
    """Beer-Lambert overlap in the transmission domain: the product of the background and the layers.

    8-bit inputs give 8-bit output (each channel read as a transmission, 255 = 1; the product is
    rounded, in integers: b * l / 255); float inputs in [0, 1] give float output. A layer is never above
    1, so a composite never brightens the background."""
    background = np.asarray(background)
    if background.dtype == np.uint8 and all(np.asarray(la).dtype == np.uint8 for la in layers):
        out = background
        for layer in layers:
            out = ((out.astype(np.uint16) * layer + 127) // 255).astype(np.uint8)
        return out
    if background.dtype == np.uint8:
        out = to_transmission(background)
        for layer in layers:
            out = out * np.minimum(_as_transmission(layer), 1.0)
        return to_pixels(out)
    out = background.astype(np.float32)
    for layer in layers:
        out = out * np.minimum(_as_transmission(layer), 1.0)
    return out


def _as_transmission(layer) -> np.ndarray:
    layer = np.asarray(layer)
    return to_transmission(layer) if layer.dtype == np.uint8 else layer.astype(np.float32, copy=False)


def divide_out(scan: np.ndarray, background: np.ndarray, floor: float = 1 / 255) -> np.ndarray:
    """The layer L with scan = background * L: scan / background, clipped to [0, 1] (float32).

    Where the estimated background is darker than the scan (the estimate is wrong there), the layer is 1:
    a layer may only absorb."""
    scan_t = _as_transmission(scan)
    back_t = np.maximum(_as_transmission(background), floor)
    return np.clip(scan_t / back_t, 0.0, 1.0)
