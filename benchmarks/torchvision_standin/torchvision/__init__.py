"""A stand-in for torchvision, for benchmarks only: runs the official MobileSAM predictor on the CPU build of
torch 2.13.0 (the issue's baseline), beside which PyPI's torchvision does not load.

The reference's predictor calls two torchvision functions, ``transforms.functional.to_pil_image`` and
``resize`` (on a PIL image: PIL's bilinear resize, as torchvision does), which are implemented here. Every other
``torchvision.*`` module that the reference or timm imports resolves to a placeholder whose names raise when
used. ``ops.boxes`` has a plain-torch NMS for completeness; the automatic generator's results are only checked
with the real torchvision. Put this folder first on ``PYTHONPATH`` (see ``benchmarks/reference_torch_build.py``).
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0+standin"
_REAL = {"torchvision.ops", "torchvision.ops.boxes", "torchvision.ops.misc", "torchvision.transforms",
         "torchvision.transforms.functional"}


class _Placeholder:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("not in anymask's torchvision stand-in")


class _PlaceholderModule(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (_Placeholder,), {})
        setattr(self, name, value)
        return value


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.startswith("torchvision.") and fullname not in _REAL:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _PlaceholderModule(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
