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
