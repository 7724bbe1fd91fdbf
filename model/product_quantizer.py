"""fastText's product quantization (`src/productquantizer.cc`, `src/quantmatrix.cc`) in numpy.

A (rows, dim) float32 matrix becomes one byte per `dsub` columns per row: the columns are
split into `nsubq` groups of `dsub` (the last group takes the remainder, `lastdsub`),
each group gets its own 256 centroids by k-means, and a row stores the nearest centroid
of each group. With `qnorm`, rows are first divided by their L2 norm and the norms get a
one-column quantizer of their own.

Ported step for step so that a model we quantize is the model fastText would make from
the same matrix: float32 arithmetic in fastText's order, and fastText's random numbers
(`std::minstd_rand` seeded 1234, drawn through libstdc++'s `std::shuffle`,
`uniform_int_distribution` and `generate_canonical`) for the sampled points, the initial
centroids and the splitting of empty clusters.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np

KSUB = 256                          # centroids per group: 1 << nbits, nbits = 8
_NITER = 25                         # k-means iterations
_EPS = np.float32(1e-7)             # how far an empty cluster's copy is pushed from its source
_MAX_POINTS = 256 * KSUB            # k-means samples at most max_points_per_cluster * ksub rows
_SEED = 1234
_ASSIGN_CHUNK = 1024                # rows per distance block: 1 MB of float32, cache-sized


class MinstdRand:
    """`std::minstd_rand` and the libstdc++ algorithms fastText draws from it with."""

    _MODULUS = 2 ** 31 - 1
    _MIN, _MAX = 1, 2 ** 31 - 2
    _RANGE = _MAX - _MIN                # what libstdc++ calls the generator's `urngrange`

    def __init__(self, seed: int = _SEED):
        self.state = seed % self._MODULUS or 1

    def __call__(self) -> int:
        self.state = self.state * 48271 % self._MODULUS
        return self.state

    def uniform_int(self, high: int) -> int:
        """`uniform_int_distribution{0, high}`: libstdc++'s downscaling with rejection."""
        span = high + 1
        scaling = self._RANGE // span
        past = span * scaling
        while True:
            value = self() - self._MIN
            if value < past:
                return value // scaling

    def canonical(self) -> float:
        """`generate_canonical<double, 53>`: two draws make one double in [0, 1)."""
        r = float(self._MAX - self._MIN + 1)
        total = float(self() - self._MIN)
        total += float(self() - self._MIN) * r
        value = total / (r * r)
        return value if value < 1.0 else math.nextafter(1.0, 0.0)

    def shuffle(self, values: List[int]) -> None:
        """`std::shuffle` in place; small ranges take two swap positions from one draw."""
        n = len(values)
        if n < 2:
            return
        if self._RANGE // n >= n:
            i = 1
            if n % 2 == 0:
                j = self.uniform_int(1)
                values[1], values[j] = values[j], values[1]
                i = 2
            while i < n:
                span = i + 1
                both = self.uniform_int(span * (span + 1) - 1)
                first, second = both // (span + 1), both % (span + 1)
                values[i], values[first] = values[first], values[i]
                values[i + 1], values[second] = values[second], values[i + 1]
                i += 2
            return
        for i in range(1, n):
            j = self.uniform_int(i)
            values[i], values[j] = values[j], values[i]


def l2_norm_rows(matrix: np.ndarray) -> np.ndarray:
    """fastText's `DenseMatrix::l2NormRow`: float32 squares summed in double, column by
    column, then the square root as float32 (the exact norms `selectEmbeddings` ranks by)."""
    total = np.zeros(len(matrix), dtype=np.float64)
    for column in np.asarray(matrix, dtype=np.float32).T:
        total += column * column
    return np.sqrt(total).astype(np.float32)


def _assign(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid of every point (the first of equals), distances summed in float32
    dimension by dimension as `distL2` does. Blocks of rows reuse two small buffers."""
    codes = np.empty(len(points), dtype=np.uint8)
    distances = np.empty((_ASSIGN_CHUNK, len(centroids)), dtype=np.float32)
    scratch = np.empty_like(distances)
    by_dimension = np.ascontiguousarray(centroids.T)
    for start in range(0, len(points), _ASSIGN_CHUNK):
        block = points[start:start + _ASSIGN_CHUNK]
        total, diff = distances[:len(block)], scratch[:len(block)]
        np.subtract(block[:, 0, None], by_dimension[0], out=total)
        np.multiply(total, total, out=total)
        for j in range(1, points.shape[1]):
            np.subtract(block[:, j, None], by_dimension[j], out=diff)
            np.multiply(diff, diff, out=diff)
            total += diff
        codes[start:start + len(block)] = np.argmin(total, axis=1)
    return codes


def _update(points: np.ndarray, codes: np.ndarray, rng: MinstdRand) -> np.ndarray:
    """fastText's `MStep`: centroids as means (sums in point order), then each empty
    cluster takes a copy of a populous one chosen at random, the two nudged apart by eps."""
    counts = np.bincount(codes, minlength=KSUB)
    centroids = np.zeros((KSUB, points.shape[1]), dtype=np.float32)
    np.add.at(centroids, codes, points)
    filled = counts > 0
    centroids[filled] /= counts[filled, None].astype(np.float32)
    signs = (np.arange(points.shape[1]) % 2 * 2 - 1).astype(np.float32) * _EPS
    spare = len(points) - KSUB
    for k in np.flatnonzero(~filled):
        m = 0
        while rng.canonical() * spare >= counts[m] - 1:
            m = (m + 1) % KSUB
        centroids[k] = centroids[m] + signs
        centroids[m] -= signs
        counts[k] = counts[m] // 2
        counts[m] -= counts[k]
    return centroids


def _kmeans(points: np.ndarray, rng: MinstdRand) -> np.ndarray:
    """(256, d) centroids: initial ones are points at a random permutation's head."""
    order = list(range(len(points)))
    rng.shuffle(order)
    centroids = points[order[:KSUB]].copy()
    for _ in range(_NITER):
        centroids = _update(points, _assign(points, centroids), rng)
    return centroids


@dataclass
class ProductQuantizer:
    """256 centroids per group of columns; `centroids` is flat, in fastText's file layout."""

    dim: int
    dsub: int
    centroids: np.ndarray   # (dim * 256,) float32

    @property
    def nsubq(self) -> int:
        return -(-self.dim // self.dsub)

    @property
    def lastdsub(self) -> int:
        return self.dim - (self.nsubq - 1) * self.dsub

    def group(self, m: int) -> np.ndarray:
        """The (256, d) centroids of column group m (a view)."""
        width = self.lastdsub if m == self.nsubq - 1 else self.dsub
        start = m * KSUB * self.dsub
        return self.centroids[start:start + KSUB * width].reshape(KSUB, width)

    def columns(self, m: int) -> slice:
        return slice(m * self.dsub, m * self.dsub + self.group(m).shape[1])

    @classmethod
    def train(cls, matrix: np.ndarray, dsub: int) -> "ProductQuantizer":
        """fastText's `ProductQuantizer::train`: per group, k-means on at most 65,536 rows
        (a fresh random sample per group when there are more)."""
        rows, dim = matrix.shape
        if rows < KSUB:
            raise ValueError(f"{rows} rows are too few to quantize: the quantizer needs at least {KSUB}")
        pq = cls(dim, dsub, np.zeros(dim * KSUB, dtype=np.float32))
        rng = MinstdRand()
        order = list(range(rows))
        sample = min(rows, _MAX_POINTS)
        for m in range(pq.nsubq):
            if sample != rows:
                rng.shuffle(order)
            points = np.ascontiguousarray(matrix[order[:sample], pq.columns(m)], dtype=np.float32)
            pq.group(m)[:] = _kmeans(points, rng)
        return pq

    def encode(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, nsubq) uint8 codes: each group's nearest centroid."""
        codes = np.empty((len(matrix), self.nsubq), dtype=np.uint8)
        for m in range(self.nsubq):
            codes[:, m] = _assign(np.ascontiguousarray(matrix[:, self.columns(m)], dtype=np.float32), self.group(m))
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(rows, dim) float32 rows the codes stand for."""
        return np.concatenate([self.group(m)[codes[:, m]] for m in range(self.nsubq)], axis=1)


@dataclass
class QuantizedMatrix:
    """fastText's `QuantMatrix`: codes per row, their quantizer, and optionally quantized norms."""

    codes: np.ndarray                               # (rows, nsubq) uint8
    pq: ProductQuantizer
    norm_codes: Optional[np.ndarray] = None         # (rows,) uint8 when qnorm
    norm_pq: Optional[ProductQuantizer] = None      # dim 1, dsub 1 when qnorm

    @property
    def qnorm(self) -> bool:
        return self.norm_pq is not None

    @property
    def shape(self):
        return (len(self.codes), self.pq.dim)

    @classmethod
    def quantize(cls, matrix: np.ndarray, dsub: int, qnorm: bool) -> "QuantizedMatrix":
        """fastText's `QuantMatrix::quantize`: with qnorm, unit rows plus quantized norms."""
        matrix = np.asarray(matrix, dtype=np.float32)
        if not qnorm:
            pq = ProductQuantizer.train(matrix, dsub)
            return cls(pq.encode(matrix), pq)
        norms = l2_norm_rows(matrix)[:, None]
        norm_pq = ProductQuantizer.train(norms, 1)
        unit = np.divide(matrix, norms, out=matrix.copy(), where=norms != 0)  # zero rows stay as they are
        pq = ProductQuantizer.train(unit, dsub)
        return cls(pq.encode(unit), pq, norm_pq.encode(norms)[:, 0], norm_pq)

    def dequantize(self) -> np.ndarray:
        """The (rows, dim) float32 rows fastText adds up for a document (`addRowToVector`)."""
        rows = self.pq.decode(self.codes)
        if self.qnorm:
            rows *= self.norm_pq.group(0)[self.norm_codes]
        return rows


def dense(matrix: Union[np.ndarray, QuantizedMatrix]) -> np.ndarray:
    """A fastText matrix as dense float32 rows, whichever way it is stored."""
    return matrix.dequantize() if isinstance(matrix, QuantizedMatrix) else matrix
