"""thermsr_utils: the thin package behind the thermsr notebooks.

Importing the package is cheap on purpose: no torch, OpenCV or optional backends are imported here.
Import the submodule you need (``from thermsr_utils import data, metrics``).
"""
__version__ = "0.1.0"
