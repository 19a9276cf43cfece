"""bigquant: out-of-core k-means colour quantization of images far larger than memory.

The public names are listed in ``__init__.pyi`` and load on first use
(``lazy_loader``, as scikit-image does), so that ``import bigquant`` and the
CLI's ``--help`` stay fast while IDEs and type checkers read the stub.
"""

from __future__ import annotations

from importlib.metadata import version

import lazy_loader

__version__ = version("bigquant")

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
