"""Custom ops take only tensors and plain values, so a communicator reaches
them as an int handle: traced graphs keep the int as a constant, and the op
looks the communicator up when it runs."""

import itertools

_communicators = {}
_handles = itertools.count(1)


def register(comm):
    handle = next(_handles)
    _communicators[handle] = comm
    return handle


def unregister(handle):
    _communicators.pop(handle, None)


def lookup(handle):
    try:
        return _communicators[handle]
    except KeyError:
        raise ValueError(f"no tpcoll communicator has handle {handle} (closed?)") from None
