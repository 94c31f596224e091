"""Allocating results like their inputs. DLPack only lends memory, so the
communicator asks the input's own framework for new arrays."""


def empty_like(array, shape=None, dtype=None):
    """A new uninitialised array of array's framework, dtype (or the named
    one, e.g. "float32") and device."""
    shape = tuple(array.shape) if shape is None else tuple(shape)
    new_empty = getattr(array, "new_empty", None)  # torch.Tensor
    if new_empty is not None:
        if dtype is None:
            return new_empty(shape)
        return new_empty(shape, dtype=getattr(__import__("torch"), dtype))
    module = type(array).__module__.split(".")[0]
    if module in ("numpy", "cupy"):
        # Same module, same device (CuPy allocates on the current device).
        return __import__(module).empty(shape, dtype=array.dtype if dtype is None else dtype)
    raise TypeError(f"tpcoll cannot allocate a {type(array).__name__}; pass the output array explicitly")
