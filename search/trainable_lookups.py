"""Tune's lookups of the trainable in Ray's registry, answered once per search instead of once per call.

Ray Tune 2.60 looks a trial's trainable up in Ray's registry at every trial start: it checks the name when
the Trial is created, then fetches the class for the trial's resources and again for its actor, checking the
name before each fetch: five round trips to the GCS and two unpickles of the class, a third of the driver's
time per trial start (BENCHMARKS.md, "The driver's loop by phase"), paid 1,024 times in a row in a 1,024-GPU
search's first wave, for a value that does not change during the search. Ray has no setting for it, so during
`tuner.fit()` the registry's two reads of the trainable category (`get`, and `contains` once it said yes) are
answered from the first; a write (`register`, `unregister`) forgets them. Ray returns the same class object
each time (cloudpickle keeps the one it made), so the cached answer is the one Ray would have given. All is
put back when the block ends, and if Ray's registry no longer looks as expected nothing is changed.
"""
from __future__ import annotations

from contextlib import contextmanager

from ray.tune import registry as ray_registry

_READS = ("get", "contains")
_WRITES = ("register", "unregister")


@contextmanager
def trainable_lookups_cached():
    """While the block runs, Ray's registry answers each trainable lookup from memory after its first read."""
    registry = getattr(ray_registry, "_global_registry", None)
    if registry is None or not all(callable(getattr(registry, name, None)) for name in _READS + _WRITES):
        yield  # a Ray whose registry changed shape: its own lookups, uncached
        return
    read = {}  # trainable name -> its class (the registry's job prefix is fixed once set)
    present = set()  # trainable names the registry was found to hold

    def get(category, key):
        if category != ray_registry.TRAINABLE_CLASS:
            return type(registry).get(registry, category, key)
        if key not in read:
            read[key] = type(registry).get(registry, category, key)
        return read[key]

    def contains(category, key):
        if category != ray_registry.TRAINABLE_CLASS:
            return type(registry).contains(registry, category, key)
        if key not in present:
            if not type(registry).contains(registry, category, key):
                return False
            present.add(key)
        return True

    def forgetting(name):
        def write(*args, **kwargs):
            read.clear()
            present.clear()
            return getattr(type(registry), name)(registry, *args, **kwargs)
        return write

    patched = {"get": get, "contains": contains, **{name: forgetting(name) for name in _WRITES}}
    shadowed = {name: registry.__dict__[name] for name in patched if name in registry.__dict__}
    registry.__dict__.update(patched)  # instance attributes: they shadow the class's methods
    try:
        yield
    finally:
        for name in patched:
            if registry.__dict__.get(name) is patched[name]:
                del registry.__dict__[name]
        registry.__dict__.update(shadowed)
