"""Sphinx configuration for the astrosr documentation.

Build with::

    sphinx-build -W -b html docs docs/_build/html

The build needs no network: intersphinx is not used, and graphviz is not
required (automodapi inheritance diagrams are switched off in ``api.rst``).
"""

import datetime
import os
import sys

# Let the docs build from a plain checkout as well as from an installed package.
sys.path.insert(0, os.path.abspath(".."))

import astrosr  # noqa: E402

# -- Project information -----------------------------------------------------

project = "astrosr"
author = "The astrosr developers"
copyright = f"{datetime.date.today().year}, {author}"

# The full version, including alpha/beta/rc tags, and the short X.Y version.
release = astrosr.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------

extensions = [
    "sphinx.ext.mathjax",
    "sphinx_automodapi.automodapi",
    "sphinx_automodapi.smart_resolver",
    "numpydoc",
]

templates_path = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"

# Unresolved references to other projects' objects (numpy, astropy, ...) are
# not errors: there is no intersphinx (the build runs offline).
nitpicky = False

default_role = "obj"

# -- automodapi / numpydoc -----------------------------------------------------

# automodapi writes one page per public object under docs/api/ (git-ignored).
automodapi_toctreedirnm = "api"
automodsumm_inherited_members = False
# numpydoc would otherwise add a second member table that clashes with automodapi's.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- Options for HTML output ---------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"astrosr {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}

# docs/_static holds the demo picture once it has been generated; only point
# Sphinx at the folder when it exists, so that -W does not fail without it.
_here = os.path.dirname(os.path.abspath(__file__))
html_static_path = ["_static"] if os.path.isdir(os.path.join(_here, "_static")) else []
