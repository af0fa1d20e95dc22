"""The forward-pass backends by name, each one module with the interface of base.py.

The engine looks a backend up here and never imports one itself: a new backend is a new
module in this package plus one line in `BACKENDS`. Each module has `why_unusable(config)`
(None, or why it cannot run this EngineConfig here: a package missing, a precision or
device it lacks) and one `Backend` subclass. The order is the order candidates are built
and reported in.
"""

from __future__ import annotations

import importlib

from swiftseg_ros.errors import ConfigError

BACKENDS = {
    "torch": ("swiftseg_ros.engine.backends.torch", "TorchBackend"),
    "onnxruntime": ("swiftseg_ros.engine.backends.onnxruntime", "OnnxRuntimeBackend"),
    "openvino": ("swiftseg_ros.engine.backends.openvino", "OpenVinoBackend"),
}


def backend_module(name: str):
    """The module of the backend registered under `name`."""
    return importlib.import_module(BACKENDS[name][0])


def backend_class(name: str):
    """The Backend subclass registered under `name`."""
    module_name, class_name = BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)


def usable_backends(config) -> tuple[tuple[str, ...], dict[str, str]]:
    """(the backends that will offer candidates, why each other registered one will not).

    `backend: auto` asks every registered backend and leaves out, with its note, one
    that cannot run here; a backend asked for by name that cannot is a ConfigError.
    """
    asked = tuple(BACKENDS) if config.backend == "auto" else (config.backend,)
    notes = {name: f"not asked (backend: {config.backend})"
             for name in BACKENDS if name not in asked}
    for name in asked:
        note = backend_module(name).why_unusable(config)
        if note is not None and config.backend != "auto":
            raise ConfigError(f"backend: {name} {note}")
        if note is not None:
            notes[name] = note
    return tuple(name for name in asked if name not in notes), notes
