"""Candidate search for :mod:`probes.neighbours`: the ``m`` smallest fp32 squared distances of every point
and their indices, by symmetric Gram tiles on the CPU, and exact float64 distances of chosen pairs.

The Gram matrix is computed once per unordered pair of row tiles (it is symmetric, so half the matmul
work) and each tile is folded into one running top-m list per point by two small parallel numba kernels
while it is still in cache, turning dot products into squared distances on the fly: one reads the tile by
rows (the lists of the tile's row points), the other by columns (the lists of its column points), so the
transposed tile is never needed. The values are
approximate (fp32 cancellation); :mod:`probes.neighbours` bounds their error, recomputes the candidates
exactly with :func:`exact_squared` and certifies the result.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

_FASTMATH = {"nnan", "nsz", "reassoc"}  # no NaN among distances; +inf marks empty slots, so no "ninf"
_LANES = 16  # keys bounded at once by the row fold
_TWO = np.float32(2)  # a float32 constant: an integer 2 would promote the keys to float64
_ROW_BLOCK = 32  # rows per parallel task of the row fold
_COLUMN_BLOCK = 128  # columns per parallel task of the column fold


@numba.njit(cache=True, boundscheck=False, fastmath=_FASTMATH, nogil=True)
def _insert(best: np.ndarray, index: np.ndarray, row: int, value: float, j: int) -> None:
    """Insert ``value`` (point ``j``) into the ascending list ``best[row]`` if it beats its largest entry."""
    m = best.shape[1]
    if value < best[row, m - 1]:
        slot = m - 1
        while slot > 0 and best[row, slot - 1] > value:
            best[row, slot] = best[row, slot - 1]
            index[row, slot] = index[row, slot - 1]
            slot -= 1
        best[row, slot] = value
        index[row, slot] = j


@numba.njit(cache=True, boundscheck=False, fastmath=_FASTMATH, nogil=True, parallel=True)
def _fold_rows(
    gram: np.ndarray, col_norms: np.ndarray, best: np.ndarray, index: np.ndarray, first: int, col_first: int
) -> None:
    """Merge the m smallest keys ``|x_j|^2 - 2 x_i . x_j`` of every row of a Gram tile [R, C] into
    ``best[first:first + R]`` and their point ids (``col_first + column``) into ``index`` (both [N, m],
    ascending; the row's own ``|x_i|^2`` is added at the end). Blocks of rows run in parallel.

    Each row is read as 16 consecutive segments of width ``C // 16``; their element-wise minimum (vectorised
    across the width) bounds 16 strided keys at once, and only groups whose bound is within the list's
    current m-th value are inserted key by key. While the list is not yet full, the bounds (distinct keys of
    the row) cap it instead: their m-th smallest is at least the row's m-th smallest key.
    """
    rows, cols = gram.shape
    m = best.shape[1]
    width = cols // _LANES
    for block in numba.prange((rows + _ROW_BLOCK - 1) // _ROW_BLOCK):
        bound = np.empty(width, np.float32)
        cap = np.empty((1, m), np.float32)
        cap_index = np.empty((1, m), np.int64)
        for r in range(block * _ROW_BLOCK, min(rows, (block + 1) * _ROW_BLOCK)):
            i = first + r
            row = gram[r]
            for c in range(width):
                bound[c] = col_norms[c] - _TWO * row[c]
            for lane in range(1, _LANES):
                for c in range(width):
                    key = col_norms[lane * width + c] - _TWO * row[lane * width + c]
                    bound[c] = key if key < bound[c] else bound[c]
            for j in range(_LANES * width, cols):
                _insert(best, index, i, col_norms[j] - _TWO * row[j], col_first + j)
            limit = best[i, m - 1]
            if limit == np.inf:  # the list is not full: cap the scan by the bounds themselves
                cap[:] = np.inf
                for c in range(width):
                    _insert(cap, cap_index, 0, bound[c], c)
                limit = cap[0, m - 1]
            for c in range(width):
                if bound[c] <= limit:
                    for lane in range(_LANES):
                        j = lane * width + c
                        _insert(best, index, i, col_norms[j] - _TWO * row[j], col_first + j)


@numba.njit(cache=True, boundscheck=False, fastmath=_FASTMATH, nogil=True, parallel=True)
def _fold_columns(
    gram: np.ndarray, row_norms: np.ndarray, best: np.ndarray, index: np.ndarray, first: int, row_first: int
) -> None:
    """Merge the m smallest keys ``|x_i|^2 - 2 x_i . x_j`` of every column of a Gram tile [R, C] into
    ``best[first:first + C]`` and their point ids (``row_first + row``) into ``index`` ([N, m], ascending;
    the column's own ``|x_j|^2`` is added at the end). Blocks of columns run in parallel.

    Rows are read in groups of 16: the element-wise minimum of a group's keys (vectorised across columns)
    is compared with each column's current m-th value, and only the columns it can enter take the group's
    keys one by one.
    """
    rows, cols = gram.shape
    m = best.shape[1]
    for block in numba.prange((cols + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK):
        start, stop = block * _COLUMN_BLOCK, min(cols, (block + 1) * _COLUMN_BLOCK)
        width = stop - start
        low = np.empty(width, np.float32)
        for g in range(0, rows, _LANES):
            last = min(g + _LANES, rows)
            row = gram[g, start:stop]
            norm = row_norms[g]
            for j in range(width):
                low[j] = norm - _TWO * row[j]
            for i in range(g + 1, last):
                row = gram[i, start:stop]
                norm = row_norms[i]
                for j in range(width):
                    low[j] = min(low[j], norm - _TWO * row[j])
            for j in range(width):
                if low[j] < best[first + start + j, m - 1]:
                    for i in range(g, last):
                        key = row_norms[i] - _TWO * gram[i, start + j]
                        _insert(best, index, first + start + j, key, row_first + i)


@numba.njit(cache=True, boundscheck=False, fastmath=_FASTMATH, nogil=True)
def exact_squared(points: np.ndarray, rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Squared distances ``sum_d (x_i[d] - x_j[d])^2`` in float64 from direct differences, for ``i =
    rows[r]`` and ``j = candidates[r, c]``. points [N, D] (fp32 or fp64), rows [R], candidates [R, m] ->
    [R, m] float64."""
    out = np.empty(candidates.shape, np.float64)
    dim = points.shape[1]
    for r in range(rows.shape[0]):
        i = rows[r]
        for c in range(candidates.shape[1]):
            j = candidates[r, c]
            total = 0.0
            for d in range(dim):
                diff = np.float64(points[i, d]) - np.float64(points[j, d])
                total += diff * diff
            out[r, c] = total
    return out


class TileFolder:
    """The ``m`` smallest fp32 squared distances of every point on the CPU, with their point ids. Every
    unordered pair of points is computed once, as a Gram tile: an off-diagonal tile is folded by rows into
    the lists of its row points and by columns into those of its column points; diagonal tiles are halved
    recursively (two smaller diagonals and one off-diagonal tile) down to ``leaf`` rows, whose symmetric
    tiles are folded by rows only, so little of the symmetric work is done twice. Diagonals go first, so
    every list is full (and prunes) before the off-diagonal tiles.

    Args:
        centred: [N, D] fp32 points (centred by the caller), contiguous on the CPU.
        norms: [N] their fp32 squared norms.
        m: list length per point, ``m < N``.
        tile: rows per tile.
    """

    def __init__(
        self, centred: torch.Tensor, norms: torch.Tensor, m: int, tile: int, leaf: int = 256
    ) -> None:
        self.points, self.norms = centred, norms.numpy()
        self.m, self.tile, self.leaf = m, tile, leaf
        n = centred.shape[0]
        self.best = np.full((n, m), np.inf, np.float32)
        self.index = np.full((n, m), -1, np.int64)
        self.buffer = torch.empty(tile * tile)

    def gram(self, rows: slice, cols: slice) -> np.ndarray:
        """Dot products between two ranges of points, in the reused buffer. [R, C]"""
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        out = self.buffer[: shape[0] * shape[1]].view(shape)
        return torch.mm(self.points[rows], self.points[cols].T, out=out).numpy()

    def off_diagonal(self, rows: slice, cols: slice) -> None:
        gram = self.gram(rows, cols)
        _fold_rows(gram, self.norms[cols], self.best, self.index, rows.start, cols.start)
        _fold_columns(gram, self.norms[rows], self.best, self.index, cols.start, rows.start)

    def diagonal(self, span: slice) -> None:
        if span.stop - span.start <= self.leaf:
            gram = self.gram(span, span)
            np.fill_diagonal(gram, -np.inf)  # a point is not its own neighbour: its key becomes +inf
            # symmetric: folding the rows gives every point of the span every pair it is in
            _fold_rows(gram, self.norms[span], self.best, self.index, span.start, span.start)
            return
        middle = (span.start + span.stop) // 2
        self.diagonal(slice(span.start, middle))
        self.diagonal(slice(middle, span.stop))
        self.off_diagonal(slice(span.start, middle), slice(middle, span.stop))

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate squared distances [N, m] (ascending) and point ids [N, m] of each point's m nearest."""
        n = self.best.shape[0]
        spans = [slice(start, min(start + self.tile, n)) for start in range(0, n, self.tile)]
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        with numba.parallel_chunksize(1):  # blocks handed out one at a time: a busy core takes fewer
            for rows in spans:  # diagonals first: every list is full before the off-diagonal tiles
                self.diagonal(rows)
            for i, rows in enumerate(spans):
                for cols in spans[i + 1 :]:
                    self.off_diagonal(rows, cols)
        return torch.from_numpy(self.best + self.norms[:, None]), torch.from_numpy(self.index)
