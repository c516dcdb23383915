"""Block coverage of march lines (issue 13 "Must show": block coverage of lines):
``blocks_of_segment`` against an exact reference (closed block squares, rational
arithmetic) on axis, diagonal, corner and random cases, for block sizes that are and are
not powers of two."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from rltwist.nodes.map.state import blocks_of_segment


def reference(x0: int, y0: int, x1: int, y1: int, block: int, width: int) -> frozenset[int]:
    """Every block whose closed square the segment between the tile centres touches
    (Liang-Barsky clipping with exact fractions), over the blocks of the bounding box."""
    per_row = -(-width // block)
    ax, ay = Fraction(2 * x0 + 1, 2), Fraction(2 * y0 + 1, 2)
    bx, by = Fraction(2 * x1 + 1, 2), Fraction(2 * y1 + 1, 2)
    dx, dy = bx - ax, by - ay
    found = set()
    for gy in range(min(y0, y1) // block, max(y0, y1) // block + 1):
        for gx in range(min(x0, x1) // block, max(x0, x1) // block + 1):
            lo, hi = Fraction(0), Fraction(1)
            ok = True
            for p, d, a, b in ((ax, dx, gx * block, (gx + 1) * block),
                               (ay, dy, gy * block, (gy + 1) * block)):
                if d == 0:
                    if not a <= p <= b:
                        ok = False
                    continue
                t0, t1 = (a - p) / d, (b - p) / d
                if t0 > t1:
                    t0, t1 = t1, t0
                lo, hi = max(lo, t0), min(hi, t1)
            if ok and lo <= hi:
                found.add(gy * per_row + gx)
    return frozenset(found)


def grid(blocks: frozenset[int], per_row: int) -> set[tuple[int, int]]:
    return {(b % per_row, b // per_row) for b in blocks}


class Segment(unittest.TestCase):
    W = 512

    def check(self, x0: int, y0: int, x1: int, y1: int, block: int = 16) -> frozenset[int]:
        got = blocks_of_segment(x0, y0, x1, y1, block, self.W)
        want = reference(x0, y0, x1, y1, block, self.W)
        self.assertEqual(got, want, f"({x0},{y0})->({x1},{y1}) block {block}: extra "
                         f"{grid(got - want, -(-self.W // block))}, missing "
                         f"{grid(want - got, -(-self.W // block))}")
        # the same line walked the other way touches the same blocks
        self.assertEqual(blocks_of_segment(x1, y1, x0, y0, block, self.W), got)
        return got

    def test_a_point_is_its_own_block(self) -> None:
        self.assertEqual(self.check(5, 5, 5, 5), frozenset({0}))
        self.assertEqual(self.check(511, 511, 511, 511), frozenset({32 * 32 - 1}))

    def test_axis_lines(self) -> None:
        # along a row of blocks, right and left; along a column, down and up
        self.assertEqual(grid(self.check(0, 3, 100, 3), 32), {(i, 0) for i in range(7)})
        self.assertEqual(grid(self.check(100, 3, 0, 3), 32), {(i, 0) for i in range(7)})
        self.assertEqual(grid(self.check(40, 0, 40, 63), 32), {(2, j) for j in range(4)})
        # tiles 15 and 16 are in neighbouring blocks
        self.assertEqual(grid(self.check(15, 15, 16, 15), 32), {(0, 0), (1, 0)})
        self.assertEqual(grid(self.check(15, 15, 15, 16), 32), {(0, 0), (0, 1)})

    def test_through_a_block_corner_touches_the_four_blocks_around_it(self) -> None:
        # the centres of tiles (15, 15) and (16, 16) are on the diagonal through the
        # corner (16, 16) of four blocks: the line touches all four
        self.assertEqual(grid(self.check(15, 15, 16, 16), 32),
                         {(0, 0), (1, 0), (0, 1), (1, 1)})
        self.assertEqual(grid(self.check(16, 15, 15, 16), 32),
                         {(0, 0), (1, 0), (0, 1), (1, 1)})
        # a long diagonal through several corners
        self.assertEqual(len(self.check(0, 0, 63, 63)), 4 + 2 * 3)

    def test_a_diagonal_that_misses_the_corner_crosses_three_blocks(self) -> None:
        got = grid(self.check(13, 15, 17, 16), 32)
        self.assertEqual(got, {(0, 0), (0, 1), (1, 1)})
        # slope 1/3 through (14.5, 15.5): it meets x = 16 at y = 16, a corner after all
        self.assertEqual(len(self.check(14, 15, 17, 16)), 4)

    def test_steep_and_shallow_lines_and_map_edges(self) -> None:
        for line in [(0, 0, 511, 1), (0, 0, 1, 511), (511, 0, 0, 511), (3, 500, 509, 7),
                     (200, 200, 201, 260), (0, 511, 511, 0)]:
            self.check(*line)

    def test_corners_the_float_walk_missed_with_blocks_of_16(self) -> None:
        # the walk of a32ec5c compared rounded floats and left out the blocks at corners
        # these lines pass through (watchers there did not see the march)
        self.assertTrue({15 + 19 * 32, 22 + 16 * 32} <= self.check(138, 347, 439, 218))
        self.assertIn(27 + 3 * 32, self.check(414, 51, 491, 106))

    def test_block_sizes_that_are_not_powers_of_two(self) -> None:
        # corners at multiples of 10, 12: the tile centres are not binary fractions of
        # a block there, and an inexact walk misses or adds blocks at the corners
        for block in (10, 12, 7, 5):
            for line in [(block - 1, block - 1, block, block), (0, 0, 6 * block - 1,
                                                                  6 * block - 1),
                         (block * 3 - 1, block - 1, block * 2 - 1, block * 2 - 1)]:
                self.check(*line, block=block)

    @settings(max_examples=400, deadline=None)
    @given(st.integers(0, 511), st.integers(0, 511), st.integers(0, 511),
           st.integers(0, 511), st.sampled_from([16, 8, 10, 12, 7, 32]))
    def test_random_lines_match_the_reference(self, x0: int, y0: int, x1: int, y1: int,
                                              block: int) -> None:
        self.check(x0, y0, x1, y1, block)

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 30), st.integers(0, 30), st.integers(-3, 3), st.integers(1, 6),
           st.sampled_from([16, 10, 12, 6]))
    def test_random_lines_through_corners_match_the_reference(
            self, bx: int, by: int, sign: int, k: int, block: int) -> None:
        # lines through the tile centres around block corner (bx, by) * block, on the
        # diagonals: x - y or x + y constant, where corners lie
        cx, cy = min(bx * block, 500), min(by * block, 500)
        s = 1 if sign >= 0 else -1
        x0, y0 = max(0, cx - k), max(0, cy - s * k) if s > 0 else min(511, cy + k)
        x1, y1 = min(511, cx + k - 1), min(511, max(0, cy + s * (k - 1)))
        self.check(x0, y0, x1, y1, block)
