"""cxx_sort_order must reproduce libstdc++'s std::sort permutation element for element.

fastText's vocabulary order (and so its word ids) depends on where the unstable
std::sort leaves equal-count words, so the port is checked against real g++ output.
"""

import shutil
import subprocess

import numpy as np
import pytest

from fasttext_horovod.data_pipeline import cxx_sort
from fasttext_horovod.data_pipeline.cxx_sort import cxx_sort_order

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed; cannot build the libstdc++ reference")

# `sort`: read n keys, std::sort (key, index) items by key only, print the indices.
# `killer n`: McIlroy's "A Killer Adversary for Quicksort" run against std::sort itself,
# printing keys that drive introsort into its depth limit (and so into heap sort).
_REFERENCE_CPP = r"""
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

struct Item { long long key; long long index; };

static std::vector<long long> val;
static long long gas, nsolid, candidate;

static bool adversary_less(long long x, long long y) {
    if (val[x] == gas && val[y] == gas) val[x == candidate ? x : y] = nsolid++;
    if (val[x] == gas) candidate = x;
    else if (val[y] == gas) candidate = y;
    return val[x] < val[y];
}

int main(int argc, char** argv) {
    if (argc == 3 && std::strcmp(argv[1], "killer") == 0) {
        long long n = std::atoll(argv[2]);
        gas = n - 1; nsolid = 0; candidate = 0;
        val.assign(n, gas);
        std::vector<long long> ptr(n);
        for (long long i = 0; i < n; ++i) ptr[i] = i;
        std::sort(ptr.begin(), ptr.end(), adversary_less);
        for (long long i = 0; i < n; ++i) std::printf("%lld\n", val[i]);
        return 0;
    }
    long long n;
    if (std::scanf("%lld", &n) != 1) return 1;
    std::vector<Item> items(n);
    for (long long i = 0; i < n; ++i) {
        if (std::scanf("%lld", &items[i].key) != 1) return 1;
        items[i].index = i;
    }
    std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.key < b.key; });
    for (const Item& item : items) std::printf("%lld\n", item.index);
    return 0;
}
"""


@pytest.fixture(scope="module")
def reference_binary(tmp_path_factory):
    """Compile the libstdc++ reference once per module."""
    build_dir = tmp_path_factory.mktemp("cxx_sort_reference")
    source = build_dir / "reference.cpp"
    source.write_text(_REFERENCE_CPP)
    binary = build_dir / "reference"
    subprocess.run(["g++", "-O2", "-std=c++17", "-o", str(binary), str(source)], check=True)
    return binary


def _reference_order(binary, keys):
    stdin = f"{len(keys)}\n" + "".join(f"{int(k)}\n" for k in keys)
    result = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True, check=True)
    return np.array(result.stdout.split(), dtype=np.int64)


def _assert_matches_reference(binary, keys):
    expected = _reference_order(binary, keys)
    actual = cxx_sort_order(keys)
    assert actual.dtype == np.int64
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("size", [0, 1, 2, 15, 16, 17, 100, 10000, 200000])
def test_order_matches_libstdcxx_with_ties(reference_binary, size):
    """Many duplicate keys make the unstable tie order visible at every size around the threshold of 16."""
    rng = np.random.default_rng(size)
    keys = rng.integers(0, max(2, size // 20), size=size)
    _assert_matches_reference(reference_binary, keys)


def test_order_matches_libstdcxx_on_zipf_counts(reference_binary):
    """Word counts are Zipf-like: a long tail of equal small counts, as in a real vocabulary."""
    rng = np.random.default_rng(7)
    keys = -np.minimum(rng.zipf(1.3, size=50000), 10**6)  # negated: fastText sorts by count descending
    _assert_matches_reference(reference_binary, keys)


def test_order_matches_libstdcxx_on_wide_signed_keys(reference_binary):
    """Keys spanning the int64 range (negative included) order exactly as in C++."""
    rng = np.random.default_rng(11)
    keys = rng.choice(np.array([-(2**63), -5, 0, 3, 2**40, 2**63 - 1], dtype=np.int64), size=3000)
    _assert_matches_reference(reference_binary, keys)


@pytest.mark.parametrize("size", [17, 1000, 100000])
def test_order_matches_libstdcxx_when_all_keys_equal(reference_binary, size):
    """All-equal keys make every partition swap; the result is a pure artefact of the algorithm."""
    _assert_matches_reference(reference_binary, np.zeros(size, dtype=np.int64))


@pytest.mark.parametrize("size", [17, 1000, 100000])
def test_order_matches_libstdcxx_on_sorted_input(reference_binary, size):
    """Already sorted input (with runs of ties) keeps libstdc++'s exact permutation."""
    _assert_matches_reference(reference_binary, np.arange(size) // 3)


@pytest.mark.parametrize("size", [17, 1000, 100000])
def test_order_matches_libstdcxx_on_reverse_sorted_input(reference_binary, size):
    """Reverse-sorted input (with runs of ties) keeps libstdc++'s exact permutation."""
    _assert_matches_reference(reference_binary, (np.arange(size) // 3)[::-1])


@pytest.mark.parametrize("size", [100, 5000])
@pytest.mark.parametrize("tie_group", [1, 2], ids=["distinct", "paired"])
def test_order_matches_libstdcxx_after_heap_sort_fallback(reference_binary, size, tie_group):
    """A quicksort-killer input exhausts the depth limit, so the heap-sort path must match too.

    Pairing the killer's keys (key // 2) still reaches the fallback and makes the heap's
    tie handling observable, which distinct keys cannot.
    """
    killer = subprocess.run([str(reference_binary), "killer", str(size)], capture_output=True, text=True, check=True)
    keys = np.array(killer.stdout.split(), dtype=np.int64) // tie_group
    _assert_matches_reference(reference_binary, keys)
    assert cxx_sort.cxx_sort_with_heap_sorts(keys)[1] > 0, "killer input did not reach the heap-sort fallback"
