"""Token layout of the embedding (docs/theory.md section 3).

A token is a column of ``D = 2d + 2`` rows, in this order::

    block 1  x    rows 0 .. d-1        the input x_i (data columns), 0 in CoT columns
    block 2  y    row  d               the label y_i (data columns), 0 in CoT columns
    block 3  w    rows d+1 .. 2d       the weight estimate w_i (CoT columns), 0 in data columns
    block 4  one  row  2d+1            the constant 1 (CoT columns), 0 in data columns

A block of a D x D parameter is named by (row block, column block): ``V31`` is rows ``w``,
columns ``x``; ``W13`` is rows ``x``, columns ``w``; ``W24`` is row ``y``, column ``one``.
Two unions recur in the sufficient-statistic form of the model (docs/theory.md section 3): the
data rows ``xy`` (x and y: where data columns are non-zero) and the CoT rows ``wo`` (w and one:
where CoT columns are non-zero); ``Z Z^T`` is block diagonal in them.
This module is the one definition of the layout: numerics and training import it.
"""
from __future__ import annotations

import sympy

from .validation import check_dim

BLOCK_NAMES = {1: "x", 2: "y", 3: "w", 4: "one"}


class Layout:
    """Row slices of the token blocks for dimension ``d`` (docs/theory.md section 3).

    ``d`` may be an int (the slices are Python ``slice`` objects usable on numpy, torch and
    sympy matrices) or a sympy Symbol (the sizes are symbolic; ``.sizes`` gives the block
    sizes ``(d, 1, d, 1)`` for block matrices, and the slices are not available).

    >>> L = Layout(2)
    >>> L.D, L.x, L.y, L.w, L.one
    (6, slice(0, 2, None), slice(2, 3, None), slice(3, 5, None), slice(5, 6, None))
    >>> L.block(3)
    slice(3, 5, None)
    >>> L.xy, L.wo
    (slice(0, 3, None), slice(3, 6, None))
    """

    def __init__(self, d):
        self.d = check_dim("d", d)
        self.D = 2 * self.d + 2
        self.sizes = (self.d, 1, self.d, 1)
        if isinstance(self.d, sympy.Symbol):
            self.x = self.y = self.w = self.one = self.xy = self.wo = None
        else:
            d = self.d
            self.x = slice(0, d)
            self.y = slice(d, d + 1)
            self.w = slice(d + 1, 2 * d + 1)
            self.one = slice(2 * d + 1, 2 * d + 2)
            self.xy = slice(0, d + 1)               # data rows: x, y
            self.wo = slice(d + 1, 2 * d + 2)       # CoT rows: w, one

    def block(self, index: int) -> slice:
        """The row slice of block ``index`` (1 = x, 2 = y, 3 = w, 4 = one)."""
        if index not in BLOCK_NAMES:
            raise ValueError(f"block index must be 1, 2, 3 or 4, got {index!r}")
        if self.x is None:
            raise ValueError("slices need an integer d; symbolic d has block sizes only")
        return getattr(self, BLOCK_NAMES[index])

    def __repr__(self) -> str:
        return f"Layout(d={self.d}, D={self.D})"
