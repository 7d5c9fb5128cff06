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
    # attenuation per unit thickness at (low, high) energy; R = 1.33 organic, 1.75 inorganic, 2.4 metal.
    # Scaled so a steel tool 2-3 units thick keeps 30-45% of the photons (the real scans' teal, HSV value
    # 0.4-0.6) and a sheet of cloth (0.3) about 95% (pale beige).
    [[0.20, 0.15], [0.35, 0.20], [0.60, 0.25]],
    dtype=np.float32,
)

# ---------------------------------------------------------------- attenuation (log domain)


def attenuation(thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-ln T at (low, high) energy from the (3, H, W) material thickness maps (organic, inorganic, metal)."""
    low = MU[0, 0] * thickness[0] + MU[1, 0] * thickness[1] + MU[2, 0] * thickness[2]
    high = MU[0, 1] * thickness[0] + MU[1, 1] * thickness[1] + MU[2, 1] * thickness[2]
    return low, high


# ---------------------------------------------------------------- colour


RAMPS = {
    # material ratio R -> (darkness 1 - mean transmission, RGB) anchors, read off the real scans of
    # ../shared/sixray-real-dev (bench/measure_real_threats.py --palette: median RGB of object pixels per
    # hue family and HSV-value band): beige to orange to brown for organics, olive for mixed stacks, green
    # for inorganics, teal to blue-teal for metals, every ramp going dark green-black when dense.
    1.30: (
        (0, (255, 255, 255)),
        (0.08, (244, 226, 202)),
        (0.2, (226, 196, 160)),
        (0.35, (205, 150, 84)),
        (0.5, (176, 118, 44)),
        (0.7, (118, 76, 24)),
        (0.88, (45, 26, 8)),
        (1, (12, 6, 0)),
    ),
    1.55: (
        (0, (255, 255, 255)),
        (0.08, (240, 236, 212)),
        (0.22, (206, 200, 150)),
        (0.42, (160, 154, 70)),
        (0.62, (100, 100, 38)),
        (0.82, (40, 40, 12)),
        (1, (10, 10, 0)),
    ),
    1.75: (
        (0, (255, 255, 255)),
        (0.08, (224, 238, 206)),
        (0.22, (170, 203, 142)),
        (0.42, (100, 158, 88)),
        (0.62, (35, 110, 50)),
        (0.82, (6, 52, 16)),
        (1, (0, 14, 0)),
    ),
    2.05: (
        (0, (255, 255, 255)),
        (0.08, (208, 236, 228)),
        (0.25, (110, 185, 165)),
        (0.45, (30, 140, 116)),
        (0.65, (8, 84, 68)),
        (0.85, (3, 40, 32)),
        (1, (0, 12, 10)),
    ),
    2.40: (
        (0, (255, 255, 255)),
        (0.08, (192, 216, 238)),
        (0.25, (70, 155, 196)),
        (0.45, (18, 114, 152)),
        (0.65, (9, 68, 98)),
        (0.85, (5, 32, 46)),
        (1, (0, 8, 14)),
    ),
}
OVERFLOW_BLUE = ((0, (2, 6, 214)), (0.5, (3, 28, 168)), (1, (8, 50, 118)))
"""Some scanners show dense metal piles as saturated blue (HSV value 0.5-0.85, 3% of the real scans'
object pixels, a fifth of the pixels in the real pliers' and wrenches' boxes): `colourise(overflow=)`."""


def _ramp(levels: np.ndarray, anchors) -> np.ndarray:
    """(len(levels), 3) RGB interpolated between (level, RGB) anchors."""
    at = [d for d, _ in anchors]
    return np.stack([np.interp(levels, at, [c[k] for _, c in anchors]) for k in range(3)], axis=-1)


def _palette() -> np.ndarray:
    """(256 ratio indices R = 1 + i / 100, 256 darkness levels, RGB) uint8 lookup table from RAMPS."""
    darkness = np.arange(256) / 255.0
    ratios = sorted(RAMPS)
    ramps = np.stack([_ramp(darkness, RAMPS[r]) for r in ratios])  # (ramps, 256, 3)
    ratio = 1.0 + np.arange(256) / 100.0
    table = np.empty((256, 256, 3), dtype=np.float64)
    for k in range(3):
        for j in range(256):
            table[:, j, k] = np.interp(ratio, ratios, ramps[:, j, k])
    return np.round(table).astype(np.uint8)


PALETTE = _palette()
_FLAT = PALETTE.reshape(-1, 3)


def colourise(
    low: np.ndarray, high: np.ndarray, hue_shift: int = 0, overflow: float | None = None, tint=None
) -> Image.Image:
    """Pseudo-colour RGB image from the two attenuation maps (-ln T_low, -ln T_high).

    The material ratio R = ln T_low / ln T_high picks the colour family (orange organic, green inorganic,
    teal-blue metal) and the mean transmission m its darkness 1 - m, through PALETTE: empty belt is white,
    dense stacks go dark. `hue_shift` moves R by hue_shift / 50 (a scanner's calibration). `overflow`: the
    high-energy attenuation above which metal (R > 2) shows saturated blue. `tint`: the empty belt's RGB
    colour (the real scanners show it light grey while thin objects keep their pale colours)."""
    ratio_index = np.clip((low / np.maximum(high, 1e-6) - 1.0) * 100.0 + 2 * hue_shift, 0, 255).astype(
        np.uint16
    )
    mean_t = (np.exp(-low) + np.exp(-high)) * 0.5
    index = ratio_index * 256 + (255.5 - mean_t * 255.0).astype(np.uint16)
    if tint is None:
        table = _FLAT
    else:  # the scanner shows an empty belt grey; the tint fades out as soon as anything absorbs
        fade = (1 - np.arange(256, dtype=np.float32) / 255) ** 12  # per darkness level, 1 on the empty belt
        gain = 1 - np.outer(fade, 1 - np.asarray(tint, np.float32) / 255)  # (256 darkness levels, RGB)
        table = np.round(_FLAT * np.tile(gain, (256, 1))).astype(np.uint8)
    rgb = np.take(table, index, axis=0)  # much faster than fancy indexing
    if overflow is not None:
        dense = (high > overflow) & (ratio_index > 100)
        if dense.any():
            level = np.clip((high[dense] - overflow) / overflow, 0, 1)
            rgb[dense] = _ramp(level, OVERFLOW_BLUE).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


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
