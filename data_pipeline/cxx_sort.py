"""Pure-Python port of GCC libstdc++'s ``std::sort`` (introsort).

fastText's ``Dictionary::threshold`` orders the vocabulary with ``std::sort``,
which is not stable: words that compare equal end up in whatever order
libstdc++'s introsort leaves them.  To reproduce fastText's word ids exactly we
replay the same algorithm step by step (``bits/stl_algo.h`` and
``bits/stl_heap.h``), so every element is moved exactly as the C++ code moves it.

Each element is one int64 ``(rank(key) << shift) | position``. For such values
``key(a) < key(b)`` is exactly ``(a | mask) < b`` and, against a fixed pivot ``p``,
``a < (p & ~mask)`` / ``(p | mask) < b`` — plain int comparisons that ignore the
position bits, so ties stay ties as in C++.

The loops are compiled with numba: fastText's sort is over the whole vocabulary (two
million entries at full scale), which took interpreted Python ~20 s on one core, the
longest serial step of preprocessing; compiled it takes well under a second.
"""

import numba
import numpy as np

_S_THRESHOLD = 16  # libstdc++ _S_threshold


def cxx_sort_order(keys) -> np.ndarray:
    """Return the permutation (int64 array of original positions) that libstdc++'s std::sort produces
    when sorting a vector whose elements compare by `a < b` on these integer keys."""
    return cxx_sort_with_heap_sorts(keys)[0]


def cxx_sort_with_heap_sorts(keys):
    """`cxx_sort_order` and how many ranges fell back to heap sort (introsort's depth limit)."""
    keys = np.asarray(keys, dtype=np.int64)
    if keys.ndim != 1:
        raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
    n = keys.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64), 0
    # Dense ranks preserve every comparison and keep the packed ints small.
    _, rank = np.unique(keys, return_inverse=True)
    shift = max(n - 1, 1).bit_length()
    mask = (1 << shift) - 1
    v = (rank.reshape(-1).astype(np.int64) << shift) | np.arange(n, dtype=np.int64)
    heap_sorts = _introsort_loop(v, n, mask, 2 * (n.bit_length() - 1))
    _final_insertion_sort(v, n, mask)
    return v & mask, heap_sorts


@numba.njit(cache=True)
def _introsort_loop(v, n, mask, depth_limit):
    """``std::__introsort_loop`` over the whole list, depth limit ``2 * __lg(n)``.

    The C++ recursion on ``[cut, last)`` is replaced by an explicit stack; the
    subranges are disjoint, so the processing order does not change the result.
    Returns how many ranges went to heap sort.
    """
    low_mask = ~mask
    heap_sorts = 0
    stack = [(0, n, depth_limit)]
    while len(stack):
        first, last, depth = stack.pop()
        while last - first > _S_THRESHOLD:
            if depth == 0:
                _heap_sort(v, first, last, mask)
                heap_sorts += 1
                break
            depth -= 1
            # __move_median_to_first(first, first + 1, mid, last - 1)
            a = first + 1
            b = first + (last - first) // 2
            c = last - 1
            va = v[a]
            vb = v[b]
            vc = v[c]
            if (va | mask) < vb:
                m = b if (vb | mask) < vc else (c if (va | mask) < vc else a)
            else:
                m = a if (va | mask) < vc else (c if (vb | mask) < vc else b)
            pivot = v[m]
            v[m] = v[first]
            v[first] = pivot
            # __unguarded_partition(first + 1, last, first): the pivot stays at `first`.
            below = pivot & low_mask  # x < below  <=>  key(x) < key(pivot)
            above = pivot | mask  # above < x  <=>  key(pivot) < key(x)
            i = first + 1
            j = last
            while True:
                while v[i] < below:
                    i += 1
                j -= 1
                while above < v[j]:
                    j -= 1
                if i >= j:
                    break
                v[i], v[j] = v[j], v[i]
                i += 1
            stack.append((i, last, depth))
            last = i
    return heap_sorts


@numba.njit(cache=True)
def _heap_sort(v, first, last, mask):
    """``std::__partial_sort(first, last, last)``: ``__make_heap`` then ``__sort_heap``."""
    length = last - first
    for parent in range((length - 2) // 2, -1, -1):
        _adjust_heap(v, first, parent, length, v[first + parent], mask)
    while last - first > 1:
        last -= 1
        value = v[last]
        v[last] = v[first]
        _adjust_heap(v, first, 0, last - first, value, mask)


@numba.njit(cache=True)
def _adjust_heap(v, base, hole, length, value, mask):
    """``std::__adjust_heap`` followed by its ``std::__push_heap``, on ``v[base:base + length]``."""
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if (v[base + child] | mask) < v[base + child - 1]:
            child -= 1
        v[base + hole] = v[base + child]
        hole = child
    if length & 1 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        v[base + hole] = v[base + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and (v[base + parent] | mask) < value:
        v[base + hole] = v[base + parent]
        hole = parent
        parent = (hole - 1) // 2
    v[base + hole] = value


@numba.njit(cache=True)
def _final_insertion_sort(v, n, mask):
    """``std::__final_insertion_sort``: guarded on the first 16, unguarded after."""
    for i in range(1, n):
        value = v[i]
        above = value | mask
        if i < _S_THRESHOLD and above < v[0]:  # guarded: comp(i, first): move_backward(first, i, i + 1)
            for k in range(i, 0, -1):
                v[k] = v[k - 1]
            v[0] = value
            continue
        # __unguarded_linear_insert: v[0] is no greater than `value`, so the scan stops in bounds.
        j = i - 1
        while above < v[j]:
            j -= 1
        for k in range(i, j + 1, -1):
            v[k] = v[k - 1]
        v[j + 1] = value
