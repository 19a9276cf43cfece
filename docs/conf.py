"""Sphinx configuration for bigquant's documentation site.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Nothing here fetches from the network (no intersphinx).
"""

from __future__ import annotations

from importlib.metadata import version as _version

project = "bigquant"
author = "bigquant contributors"
copyright = "bigquant contributors"
release = _version("bigquant")
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
]

templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# benchmark_results.md and tiles_benchmark_results.md are included by benchmarks.md (and
# rewritten by benchmarks/bench.py and benchmarks/tiles.py).
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "benchmark_results.md",
    "tiles_benchmark_results.md",
]

# MyST: GitHub-style anchors for headings, so that the pages' links such as
# user-guide.md#more-than-256-colours work both on GitHub and in the built site.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# API reference: autosummary writes one page per public name into
# docs/api/generated/ (gitignored), numpydoc renders the docstrings.
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"
# numpydoc lists class members itself; with autosummary that would document each
# attribute twice (duplicate object warnings). _templates/autosummary/class.rst
# documents a class's public methods and properties with autodoc's :members: instead
# (documented members only: a dataclass field's default, such as Image.rechunked's
# None, is not a member to document).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Docstring checks run on every build and -W turns them into errors. Excluded for
# now: ES01 (extended summary), SA01 (See Also), GL01/GL02 (summary placement),
# and SS05/SS06 (summary wording and length). Every public name needs Parameters,
# Returns and an Examples section.
numpydoc_validation_checks = {"all", "ES01", "SA01", "GL01", "GL02", "SS05", "SS06"}

html_theme = "pydata_sphinx_theme"
html_title = f"bigquant {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []


def _skip_dataclass_fields(app, what, name, obj, skip, options):
    """Leave dataclass fields out of a class's :members:.

    The class docstring's Attributes section documents them; autodoc would otherwise
    list a field with a default (such as ``Image.rechunked``, whose default is None)
    as an undocumented class attribute, which numpydoc's validation rejects.
    """
    import dataclasses
    import inspect

    import bigquant

    if what != "class" or skip or inspect.isroutine(obj) or isinstance(obj, property):
        return None
    for public in bigquant.__all__:
        cls = getattr(bigquant, public)
        if dataclasses.is_dataclass(cls) and isinstance(cls, type):
            if name in {f.name for f in dataclasses.fields(cls)}:
                return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_dataclass_fields)
