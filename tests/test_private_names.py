"""No module of astrosr uses another astrosr module's private names.

What two modules share is a public name of the module that owns it: no
``from .x import _y`` (nor ``from astrosr.x import _y``), and no ``x._y`` on a
name bound by importing an astrosr module (``from . import x``,
``import astrosr.x as x``, ``import astrosr.x`` then ``astrosr.x._y``).
Dunder names (``__version__``) are allowed. A module's own private names, and
private attributes of its own objects (``self._x``), are its business.
"""
import ast
import textwrap
from pathlib import Path

import pytest

import astrosr

PACKAGE = Path(astrosr.__file__).resolve().parent


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_astrosr(node):
    """Whether an ``ImportFrom`` imports from astrosr (relative, or absolute ``astrosr.*``)."""
    return node.level > 0 or (node.module or "").split(".")[0] == "astrosr"


def _root(node):
    """The `ast.Name` at the bottom of an attribute chain ``a.b.c``, or None."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node if isinstance(node, ast.Name) else None


def private_name_uses(source, filename="<string>"):
    """Cross-module uses of private names in the source of an astrosr module.

    Parameters
    ----------
    source : str
        Python source of a module of the astrosr package (relative imports
        are taken to be imports of astrosr modules).
    filename : str
        Name given to the module in the results.

    Returns
    -------
    list of str
        ``"filename:line: what"``, one per use, in line order.
    """
    tree = ast.parse(source, filename)
    found = []
    bound = set()  # names bound by importing from astrosr
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _is_astrosr(node):
            origin = "." * node.level + (node.module or "")
            for alias in node.names:
                if _is_private(alias.name):
                    found.append((node.lineno, f"imports {alias.name} from {origin}"))
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "astrosr":
                    bound.add(alias.asname or "astrosr")
                    private = [p for p in alias.name.split(".") if _is_private(p)]
                    if private:
                        found.append((node.lineno, f"imports private module {alias.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            root = _root(node.value)
            if root is not None and root.id in bound:
                found.append((node.lineno, f"uses {ast.unparse(node)}"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _is_private(node.args[1].value)):
            root = _root(node.args[0])
            if root is not None and root.id in bound:
                found.append((node.lineno, f"uses {ast.unparse(node)}"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def _package_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_helper_catches_planted_violations():
    source = textwrap.dedent("""\
        from . import data, simulate
        from .data import _check_int, training_pairs
        from ..psf import ArrayPSF as _Array, _positive as positive
        from astrosr.fusion import _check_scale
        from astrosr import _data
        import astrosr.inference as inf
        import astrosr.pipeline
        import numpy as np
        from numpy import _NoValue
        from .stars import column as _column
        from .. import __version__
        x = data._augment(np.ones(2), None)
        y = inf._richardson_lucy
        z = astrosr.pipeline._fill
        w = getattr(simulate, "_private")
        ok = (data.training_pairs, np._NoValue, self._cache, _column, __version__, data.__doc__)
        ok2 = getattr(data, "public"), _Array(np.ones((3, 3)))._radius
        import astrosr._demo as demo
        """)
    assert private_name_uses(source, "planted.py") == [
        "planted.py:2: imports _check_int from .data",
        "planted.py:3: imports _positive from ..psf",
        "planted.py:4: imports _check_scale from astrosr.fusion",
        "planted.py:5: imports _data from astrosr",
        "planted.py:12: uses data._augment",
        "planted.py:13: uses inf._richardson_lucy",
        "planted.py:14: uses astrosr.pipeline._fill",
        "planted.py:15: uses getattr(simulate, '_private')",
        "planted.py:18: imports private module astrosr._demo",
    ]


def test_helper_passes_clean_source():
    source = textwrap.dedent("""\
        from . import data
        from .data import check_int
        from .._data import hubble_deep_field
        from .stars import column as _column
        import astrosr.models.transform as transform
        n = check_int(data.VAL_SEED, "n") + transform.forward(1.0, 1.0)
        """)
    assert private_name_uses(source) == []


def test_no_cross_module_private_names():
    files = _package_files()
    names = {p.relative_to(PACKAGE).as_posix() for p in files}
    assert {"__init__.py", "psf/estimate.py", "training/loop.py", "models/model.py"} <= names
    found = []
    for path in files:
        found += private_name_uses(path.read_text(encoding="utf-8"),
                                   path.relative_to(PACKAGE.parent).as_posix())
    if found:
        pytest.fail("private names used across astrosr modules (make them public names of the "
                    "module that owns them):\n" + "\n".join(found), pytrace=False)
