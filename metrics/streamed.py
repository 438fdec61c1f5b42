"""Mean and standard error over a run's combinations with memory that does not grow with the run.

A report reduces one value per combination and metric to `mean` and `se` (numpy's `mean()` and
`std(ddof=1) / sqrt(m)`). Holding those values costs 8 bytes per combination and metric, and holding what they
are computed from (every item's grading samples) hundreds. `SpilledColumns` writes the values, a row of metrics
per combination, to an anonymous temporary file as they are produced and reduces them afterwards a block at a
time, with numpy's own summation order, so every float equals what numpy gives on the whole column.

numpy sums a contiguous float64 array pairwise: fewer than 8 values one by one, up to 128 with 8 running
sums, more split in two at `n // 2` rounded down to a multiple of 8 and each half summed the same way (then
added to the identity, 0.0). `pairwise_sum` follows that tree from the top and lets numpy sum each subtree
of at most `LEAF` values: reading the subtrees left to right reads the file once, front to back, and holds one
subtree. `tests/test_streamed_reports.py` checks the results against `np.mean`/`np.std` bit for bit.
"""

from __future__ import annotations

import tempfile

import numpy as np

LEAF = 1 << 14  # values summed by numpy at once (a subtree of numpy's pairwise tree)
BLOCK = 128  # numpy sums up to this many values without splitting them (its PW_BLOCKSIZE)


def pairwise_sum(read, n: int) -> list[float]:
    """numpy's `add.reduce` of each column of an n-row table that `read(rows)` hands out in order as
    (columns, rows) float64 arrays; `read` is called with the sizes of consecutive subtrees."""
    def tree(size: int) -> list[float]:
        if size <= max(LEAF, BLOCK):
            block = read(size)
            return [float(np.add.reduce(column)) for column in block]
        half = size // 2
        half -= half % 8
        left = tree(half)
        return [a + b for a, b in zip(left, tree(size - half), strict=True)]

    if n <= max(LEAF, BLOCK):
        return tree(n)  # numpy's own reduce, identity included
    return [0.0 + s for s in tree(n)]  # the identity numpy starts from (turns -0.0 into 0.0, as numpy does)


class SpilledColumns:
    """Rows of `width` float64 values appended in order, kept in a temporary file, reduced column by column to
    numpy's `mean()` and `std(ddof=1) / sqrt(n)` without holding the rows."""

    def __init__(self, width: int):
        self.width, self.rows = width, 0
        self._file = tempfile.TemporaryFile()  # removed when closed (or when the process ends)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of {self.width} values, got shape {rows.shape}")
        self._file.write(rows.tobytes())
        self.rows += rows.shape[0]

    def _reader(self, transform=None):
        self._file.seek(0)

        def read(count: int) -> np.ndarray:
            data = self._file.read(count * self.width * 8)
            block = np.frombuffer(data, dtype=np.float64).reshape(count, self.width).T.copy()  # a column a row
            return block if transform is None else transform(block)

        return read

    def mean_se(self) -> list[tuple[float, float]]:
        """(mean, standard error) per column: nan for no rows; the standard error nan for fewer than two."""
        n = self.rows
        if not n:
            return [(float("nan"), float("nan"))] * self.width
        means = [np.float64(s) / n for s in pairwise_sum(self._reader(), n)]  # numpy's mean: sum / count
        if n < 2:
            return [(float(m), float("nan")) for m in means]
        centre = np.array(means, dtype=np.float64)[:, None]

        def squares(block: np.ndarray) -> np.ndarray:  # as numpy's var: subtract the mean, square in place
            block = np.subtract(block, centre, out=block)
            return np.square(block, out=block)

        out = []
        for mean, total in zip(means, pairwise_sum(self._reader(squares), n), strict=True):
            std = np.sqrt(np.float64(total) / (n - 1))
            out.append((float(mean), float(std / np.sqrt(n))))
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
