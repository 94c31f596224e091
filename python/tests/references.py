"""NumPy statements of the numeric contract, for exact comparisons."""

import numpy as np


def rank_order_sum(inputs):
    """Every rank's input widened to fp32, added in rank order 0..n-1, rounded
    once to the dtype (NumPy's float32 -> float16 cast rounds to nearest even)."""
    total = inputs[0].astype(np.float32)
    for x in inputs[1:]:
        total = total + x.astype(np.float32)
    return total.astype(inputs[0].dtype)


def rmsnorm64(s, weight, eps):
    """RMSNorm in fp64: the value the library's fp32 arithmetic approximates."""
    s = s.astype(np.float64)
    return s / np.sqrt(np.mean(s * s, axis=-1, keepdims=True) + eps) * weight.astype(np.float64)


def rank_input(rank, shape, dtype, seed=0):
    """The same rank always gets the same data; ranks get different data."""
    rng = np.random.default_rng([seed, rank])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def _e4m3_values():
    """The non-negative finite E4M3 values by code 0x00..0x7e, from the format."""
    codes = np.arange(127)
    exponent, mantissa = codes >> 3, codes & 7
    return np.where(exponent == 0, np.ldexp(mantissa, -9), np.ldexp(8 + mantissa, exponent - 10)).astype(np.float64)


def e4m3_codes(v):
    """float32 values to E4M3 codes (uint8): nearest value, ties to the even
    code, beyond 448 saturated, NaN 0x7f, by search over the format's values."""
    table = _e4m3_values()
    a = np.abs(v.astype(np.float64))
    above = np.clip(np.searchsorted(table, a, side="right"), 1, 126)
    lo, hi = above - 1, above
    down, up = a - table[lo], table[hi] - a
    code = np.where(down < up, lo, np.where(up < down, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(a >= 448, 126, code) | np.where(np.signbit(v), 0x80, 0)
    return np.where(np.isnan(v), 0x7F, code).astype(np.uint8)


def quantise_fp8(out, scale=None):
    """The FP8 op's rule applied to the fused op's out: (codes, row_scales);
    per token when scale is None."""
    v = out.astype(np.float32)
    if scale is not None:
        return e4m3_codes(v / np.float32(scale)), None
    row_scales = (np.nanmax(np.abs(v), axis=-1) / np.float32(448)).astype(np.float32)
    divisor = np.where(row_scales == 0, np.float32(1), row_scales)[..., None]
    return e4m3_codes(v / divisor), row_scales
