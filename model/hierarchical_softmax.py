"""fastText's hierarchical softmax (``HierarchicalSoftmaxLoss`` in src/loss.cc).

Three pieces, each reproducing the C++ behaviour:

* :class:`HuffmanTree` -- ``buildTree``: the two-pointer Huffman construction over
  the label counts and the leaf-to-root ``paths``/``codes`` used by ``forward``.
* :func:`hs_loss` -- ``forward`` as a differentiable MXNet expression.  fastText
  does plain SGD on the sum of ``binaryLogistic`` losses along the path (for each
  node ``alpha = lr * (code - sigmoid(score))``, ``grad += alpha * wo[node]``,
  ``wo[node] += alpha * hidden``), which is exactly ``-lr`` times the gradient of
  the summed loss, so autograd of this sum gives the same update.
* :func:`hs_top_k` -- ``predict``/``dfs`` in numpy, including the ``log(x + 1e-5)``
  smoothing, the pruning rules and libstdc++'s heap algorithms, so the returned
  labels (ties included) and probabilities match ``fasttext``'s ``predict``.

Output matrix layout: internal node ``osz + r`` scores with row ``r`` of the output
matrix, ``r`` in ``[0, osz - 2]``.  fastText allocates ``nlabels`` rows and never
uses the last one; both ``osz - 1`` and ``osz`` rows are accepted here.
"""

import math

import numpy as np

_INTERNAL_NODE_COUNT = 10 ** 15  # fastText initialises every node's count to 1e15


class HuffmanTree:
    """Huffman tree over the labels, built exactly as fastText's ``buildTree``.

    ``counts`` are the label frequencies in label-id order.  fastText's dictionary
    sorts labels by decreasing count, which is what makes the two-pointer merge an
    optimal Huffman code; other orders are accepted and built the same way.

    Attributes:
      parent, left, right: int64 arrays over the ``2 * osz - 1`` nodes (-1 = none);
        leaves are ``0 .. osz-1``, the root is ``2 * osz - 2``.
      binary: bool array, True for the node that was the second pick of its merge
        (the right child).
      paths: per label, output-matrix rows (internal node index minus ``osz``) from
        the leaf's parent up to the root.
      codes: per label, the matching 0/1 targets (1 = the step goes to a right child).
      path_matrix, code_matrix, mask: ``(osz, width)`` padded int32/float32/float32
        versions of ``paths``/``codes`` for batched :func:`hs_loss`; padding has path
        row 0, code 0 and mask 0.  ``width = max(max_depth, 1)``.

    With a single label the root is the leaf: every path is empty (``max_depth`` 0),
    so the loss is 0 and ``hs_top_k`` returns that label with probability 1.  The
    padded matrices still get one (masked) column so batched ops never see a
    zero-size axis; :func:`hs_loss` then gathers row 0 under a zero mask, so the
    output matrix needs one row, as fastText's (``nlabels`` rows) has.
    """

    def __init__(self, counts):
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or counts.shape[0] == 0:
            raise ValueError(f"counts must be a non-empty 1-D sequence, got shape {counts.shape}")
        osz = int(counts.shape[0])
        nnodes = 2 * osz - 1
        self.nlabels = osz
        self.parent = np.full(nnodes, -1, dtype=np.int64)
        self.left = np.full(nnodes, -1, dtype=np.int64)
        self.right = np.full(nnodes, -1, dtype=np.int64)
        self.count = np.full(nnodes, _INTERNAL_NODE_COUNT, dtype=np.int64)
        self.binary = np.zeros(nnodes, dtype=bool)
        self.count[:osz] = counts

        leaf = osz - 1
        node = osz
        for i in range(osz, nnodes):
            mini = [0, 0]
            for j in range(2):
                if leaf >= 0 and self.count[leaf] < self.count[node]:
                    mini[j] = leaf
                    leaf -= 1
                else:
                    mini[j] = node
                    node += 1
            self.left[i] = mini[0]
            self.right[i] = mini[1]
            self.count[i] = self.count[mini[0]] + self.count[mini[1]]
            self.parent[mini[0]] = i
            self.parent[mini[1]] = i
            self.binary[mini[1]] = True

        self.paths = []
        self.codes = []
        for i in range(osz):
            path, code = [], []
            j = i
            while self.parent[j] != -1:
                path.append(int(self.parent[j]) - osz)
                code.append(int(self.binary[j]))
                j = int(self.parent[j])
            self.paths.append(path)
            self.codes.append(code)

        self.max_depth = max(len(p) for p in self.paths)
        width = max(self.max_depth, 1)
        self.path_matrix = np.zeros((osz, width), dtype=np.int32)
        self.code_matrix = np.zeros((osz, width), dtype=np.float32)
        self.mask = np.zeros((osz, width), dtype=np.float32)
        for i, (path, code) in enumerate(zip(self.paths, self.codes)):
            self.path_matrix[i, :len(path)] = path
            self.code_matrix[i, :len(code)] = code
            self.mask[i, :len(path)] = 1.0

    @property
    def root(self):
        return 2 * self.nlabels - 2

    def batch(self, labels):
        """Padded ``(path_rows, codes, mask)`` numpy arrays for a batch of label ids."""
        labels = np.asarray(labels, dtype=np.int64)
        return self.path_matrix[labels], self.code_matrix[labels], self.mask[labels]


def hs_loss(F, hidden, output_weight, path_rows, codes, mask):
    """Per-example hierarchical-softmax loss, shape ``(B,)``.

    Sum over the label's path of fastText's ``binaryLogistic`` loss:
    ``-log(sigmoid(s))`` for code 1, ``-log(1 - sigmoid(s))`` for code 0, with
    ``s = dot(output_weight[row], hidden)``.  Both are ``softrelu(-(2*code - 1) * s)``;
    MXNet's softrelu is overflow-safe and its gradient at ``s = 0`` is the exact
    ``0.5`` (fastText's output matrix starts at zero, so ``s = 0`` is common).

    Args:
      F: ``mx.nd`` or ``mx.sym``.
      hidden: ``(B, dim)``.
      output_weight: ``(rows, dim)`` with ``rows >= osz - 1``.
      path_rows, codes, mask: ``(B, width)``, e.g. ``HuffmanTree.batch(labels)``.
    """
    node_weights = F.take(output_weight, path_rows, axis=0)            # (B, width, dim)
    scores = F.sum(F.broadcast_mul(node_weights, F.expand_dims(hidden, axis=1)), axis=2)
    signs = 2.0 * codes - 1.0
    node_losses = F.Activation(-signs * scores, act_type="softrelu")   # -log sigmoid(sign * s)
    return F.sum(node_losses * mask, axis=1)


def _comp(lhs, rhs):
    """fastText's ``comparePairs``: ``l.first > r.first`` (a min-heap on the score)."""
    return lhs[0] > rhs[0]


def _sift_up(heap, hole, top, value):
    """libstdc++ ``std::__push_heap``."""
    parent = (hole - 1) // 2
    while hole > top and _comp(heap[parent], value):
        heap[hole] = heap[parent]
        hole = parent
        parent = (hole - 1) // 2
    heap[hole] = value


def _adjust_heap(heap, hole, length, value):
    """libstdc++ ``std::__adjust_heap``."""
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if _comp(heap[child], heap[child - 1]):
            child -= 1
        heap[hole] = heap[child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        heap[hole] = heap[child - 1]
        hole = child - 1
    _sift_up(heap, hole, top, value)


def _push_heap(heap):
    """``std::push_heap(heap.begin(), heap.end(), comparePairs)``."""
    _sift_up(heap, len(heap) - 1, 0, heap[-1])


def _pop_heap(heap, last):
    """``std::pop_heap(heap.begin(), heap.begin() + last, comparePairs)``."""
    if last > 1:
        last -= 1
        value = heap[last]
        heap[last] = heap[0]
        _adjust_heap(heap, 0, last, value)


def _sort_heap(heap):
    """``std::sort_heap(heap.begin(), heap.end(), comparePairs)``: best score first."""
    for last in range(len(heap), 1, -1):
        _pop_heap(heap, last)


def _std_log(x):
    """fastText's ``std_log(real x)``: ``log(x + 1e-5)`` in double, returned as float."""
    return np.float32(math.log(float(np.float32(x)) + 1e-5))


def _top_k_one(tree, hidden, output_weight, k, threshold):
    osz = tree.nlabels
    log_threshold = _std_log(threshold)
    # The score of internal node osz + r only depends on row r, so compute them all at once.
    logits = output_weight[:osz - 1].astype(np.float32) @ hidden.astype(np.float32)
    heap = []
    stack = [(tree.root, np.float32(0.0))]
    while stack:
        node, score = stack.pop()
        if score < log_threshold:
            continue
        if len(heap) == k and score < heap[0][0]:
            continue
        if tree.left[node] == -1 and tree.right[node] == -1:
            heap.append((score, int(node)))
            _push_heap(heap)
            if len(heap) > k:
                _pop_heap(heap, len(heap))
                heap.pop()
            continue
        # C++: f = 1. / (1 + std::exp(-f)) -- float exp, double division, stored as float.
        f = np.float32(1.0 / float(np.float32(1.0) + np.exp(-logits[node - osz])))
        # Recursion visits left then right; the stack pops the last pushed first.
        stack.append((int(tree.right[node]), np.float32(score + _std_log(f))))
        stack.append((int(tree.left[node]), np.float32(score + _std_log(1.0 - float(f)))))
    _sort_heap(heap)
    return [(label, float(np.exp(score))) for score, label in heap]


def hs_top_k(tree, hidden_np, output_weight_np, k, threshold=0.0):
    """Top-``k`` labels as fastText's hierarchical-softmax ``predict`` returns them.

    Returns ``[(label_id, probability), ...]`` ordered like fastText's output (best
    first; ties in libstdc++'s ``sort_heap`` order).  ``probability`` is
    ``exp(sum(log(p + 1e-5)))`` over the path, the smoothed value fastText reports,
    and subtrees whose accumulated log-probability drops below ``log(threshold +
    1e-5)`` are skipped -- so even ``threshold=0`` drops labels under ~1e-5.
    ``hidden_np`` of shape ``(B, dim)`` gives a list of such lists, one per row.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    hidden_np = np.asarray(hidden_np)
    output_weight_np = np.asarray(output_weight_np)
    if output_weight_np.shape[0] < tree.nlabels - 1:
        raise ValueError(
            f"output matrix has {output_weight_np.shape[0]} rows, the tree needs {tree.nlabels - 1}")
    if hidden_np.ndim == 2:
        return [_top_k_one(tree, h, output_weight_np, k, threshold) for h in hidden_np]
    return _top_k_one(tree, hidden_np, output_weight_np, k, threshold)
