"""Checks that model.hierarchical_softmax reproduces fastText's HierarchicalSoftmaxLoss."""

import heapq

import mxnet as mx
import numpy as np
import pytest

from fasttext_horovod.model.hierarchical_softmax import HuffmanTree, hs_loss, hs_top_k


def _huffman_optimal_cost(counts):
    """sum(count * depth) of an optimal Huffman code, computed independently with heapq."""
    heap = list(counts)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _path_probability(tree, label, output_weight, hidden):
    """Product over the label's path of sigmoid(s) for code 1 and 1 - sigmoid(s) for code 0."""
    prob = 1.0
    for row, code in zip(tree.paths[label], tree.codes[label]):
        p = _sigmoid(float(np.dot(output_weight[row].astype(np.float64), hidden)))
        prob *= p if code else 1.0 - p
    return prob


def _random_problem(nlabels, dim, batch, seed, scale=0.5):
    rng = np.random.RandomState(seed)
    counts = np.sort(rng.randint(1, 1000, size=nlabels))[::-1]
    tree = HuffmanTree(counts)
    output_weight = rng.normal(0.0, scale, size=(nlabels - 1, dim))
    hidden = rng.normal(0.0, scale, size=(batch, dim))
    labels = rng.randint(0, nlabels, size=batch)
    return tree, output_weight, hidden, labels


# --- tree -----------------------------------------------------------------


def test_tree_matches_hand_worked_fasttext_merge_for_skewed_counts():
    """[5,3,2,2,1]: merges (4,3)->5, (2,5)->6, (1,6)->7, (0,7)->8, worked by hand from buildTree."""
    tree = HuffmanTree([5, 3, 2, 2, 1])
    assert tree.paths == [[3], [2, 3], [1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert tree.codes == [[0], [0, 1], [0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]]
    assert tree.left.tolist()[5:] == [4, 2, 1, 0]
    assert tree.right.tolist()[5:] == [3, 5, 6, 7]
    assert tree.count.tolist() == [5, 3, 2, 2, 1, 3, 5, 8, 13]


def test_tree_prefers_internal_node_when_counts_tie():
    """[2,1,1]: the merged node (count 2) is picked before leaf 0 (count 2) because the test is strict <."""
    tree = HuffmanTree([2, 1, 1])
    assert tree.paths == [[1], [0, 1], [0, 1]]
    assert tree.codes == [[1], [1, 0], [0, 0]]


def test_two_labels_share_the_root_with_the_frequent_label_coded_one():
    tree = HuffmanTree([3, 1])
    assert tree.paths == [[0], [0]]
    assert tree.codes == [[1], [0]]


@pytest.mark.parametrize(
    "counts",
    [
        [5, 3, 2, 2, 1],
        [7, 7, 7, 7, 7, 7],
        sorted(np.random.RandomState(3).randint(1, 500, size=20).tolist(), reverse=True),
    ],
    ids=["skewed5", "equal6", "random20"],
)
def test_codes_are_prefix_free_and_depths_are_huffman_optimal(counts):
    """fastText's two-pointer merge over count-sorted labels must yield an optimal prefix code."""
    tree = HuffmanTree(counts)
    root_to_leaf = [tuple(reversed(code)) for code in tree.codes]
    for i, a in enumerate(root_to_leaf):
        for j, b in enumerate(root_to_leaf):
            if i != j:
                assert b[:len(a)] != a, f"code of label {i} is a prefix of label {j}'s"
    assert sum(2.0 ** -len(c) for c in root_to_leaf) == pytest.approx(1.0)
    assert sum(c * len(p) for c, p in zip(counts, tree.paths)) == _huffman_optimal_cost(counts)
    for path in tree.paths:
        assert path[-1] == len(counts) - 2, "every path must end at the root's row"


def test_padded_matrices_mirror_paths_and_codes():
    tree = HuffmanTree([5, 3, 2, 2, 1])
    assert tree.path_matrix.shape == (5, 4) and tree.path_matrix.dtype == np.int32
    assert tree.code_matrix.dtype == np.float32 and tree.mask.dtype == np.float32
    for label, (path, code) in enumerate(zip(tree.paths, tree.codes)):
        depth = len(path)
        assert tree.path_matrix[label, :depth].tolist() == path
        assert tree.code_matrix[label, :depth].tolist() == code
        assert tree.mask[label].tolist() == [1.0] * depth + [0.0] * (4 - depth)
        assert not tree.path_matrix[label, depth:].any() and not tree.code_matrix[label, depth:].any()


def test_single_label_has_empty_path_zero_loss_and_certain_prediction():
    """osz == 1: the root is the leaf, so there is nothing to learn and the label has probability 1."""
    tree = HuffmanTree([4])
    assert tree.paths == [[]] and tree.codes == [[]] and tree.max_depth == 0
    assert tree.mask.tolist() == [[0.0]]
    hidden = mx.nd.array([[0.3, -0.2], [1.0, 2.0]])
    weight = mx.nd.ones((1, 2))  # fastText allocates nlabels rows even for hs
    rows, codes, mask = (mx.nd.array(a) for a in tree.batch([0, 0]))
    assert hs_loss(mx.nd, hidden, weight, rows, codes, mask).asnumpy().tolist() == [0.0, 0.0]
    assert hs_top_k(tree, np.array([0.3, -0.2]), np.ones((1, 2)), k=3) == [(0, 1.0)]


# --- loss -----------------------------------------------------------------


def _nd_batch(tree, labels, dtype):
    rows, codes, mask = tree.batch(labels)
    return mx.nd.array(rows, dtype="int32"), mx.nd.array(codes, dtype=dtype), mx.nd.array(mask, dtype=dtype)


def _loss_and_grads(tree, output_weight, hidden, labels, dtype="float64"):
    hidden_nd = mx.nd.array(hidden, dtype=dtype)
    weight_nd = mx.nd.array(output_weight, dtype=dtype)
    hidden_nd.attach_grad()
    weight_nd.attach_grad()
    rows, codes, mask = _nd_batch(tree, labels, dtype)
    with mx.autograd.record():
        loss = hs_loss(mx.nd, hidden_nd, weight_nd, rows, codes, mask)
        total = loss.sum()
    total.backward()
    return loss.asnumpy(), hidden_nd.grad.asnumpy(), weight_nd.grad.asnumpy()


def test_hs_loss_equals_sum_of_binary_logistic_losses_along_each_path():
    tree, output_weight, hidden, labels = _random_problem(nlabels=9, dim=6, batch=16, seed=0)
    loss, _, _ = _loss_and_grads(tree, output_weight, hidden, labels)
    expected = []
    for h, label in zip(hidden, labels):
        total = 0.0
        for row, code in zip(tree.paths[label], tree.codes[label]):
            p = _sigmoid(output_weight[row] @ h)
            total += -np.log(p) if code else -np.log(1.0 - p)
        expected.append(total)
    np.testing.assert_allclose(loss, expected, rtol=1e-10)


def test_hs_loss_stays_finite_and_linear_for_saturated_scores():
    """-log(sigmoid(-|s|)) ~ |s| for huge |s|; a naive log(sigmoid) would give inf."""
    tree = HuffmanTree([3, 1])
    weight = mx.nd.array([[1.0]])
    hidden = mx.nd.array([[200.0], [-200.0]])
    rows, codes, mask = _nd_batch(tree, [1, 0], "float32")  # label 1 has code 0, label 0 code 1
    loss = hs_loss(mx.nd, hidden, weight, rows, codes, mask).asnumpy()
    np.testing.assert_allclose(loss, [200.0, 200.0], rtol=1e-6)


def test_hs_loss_gradient_is_fasttext_sgd_update_over_lr():
    """fastText: alpha = lr*(code - sigmoid(s)); grad += alpha*wo[row]; wo[row] += alpha*hidden.

    A path never repeats a row, so within one example these in-place updates are exactly
    -lr times the gradient of the summed loss.  Repeated labels in the batch check that rows
    shared across examples accumulate.
    """
    tree, output_weight, hidden, labels = _random_problem(nlabels=7, dim=5, batch=12, seed=1)
    labels[:3] = labels[3]
    _, grad_hidden, grad_weight = _loss_and_grads(tree, output_weight, hidden, labels)
    lr = 0.05
    expected_hidden_update = np.zeros_like(hidden)
    expected_weight_update = np.zeros_like(output_weight)
    for b, label in enumerate(labels):
        for row, code in zip(tree.paths[label], tree.codes[label]):
            alpha = lr * (code - _sigmoid(output_weight[row] @ hidden[b]))
            expected_hidden_update[b] += alpha * output_weight[row]
            expected_weight_update[row] += alpha * hidden[b]
    np.testing.assert_allclose(-lr * grad_hidden, expected_hidden_update, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(-lr * grad_weight, expected_weight_update, rtol=1e-10, atol=1e-14)


def test_hs_loss_gradient_matches_finite_differences():
    tree, output_weight, hidden, labels = _random_problem(nlabels=6, dim=4, batch=5, seed=2)
    _, grad_hidden, grad_weight = _loss_and_grads(tree, output_weight, hidden, labels)

    def total_loss(w, h):
        return _loss_and_grads(tree, w, h, labels)[0].sum()

    eps = 1e-6
    for array, grad, as_args in (
        (hidden, grad_hidden, lambda x: (output_weight, x)),
        (output_weight, grad_weight, lambda x: (x, hidden)),
    ):
        numeric = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric[idx] = (total_loss(*as_args(plus)) - total_loss(*as_args(minus))) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_hs_loss_gives_the_same_values_when_hybridized():
    """hs_loss only uses ops that exist under both mx.nd and mx.sym."""
    tree, output_weight, hidden, labels = _random_problem(nlabels=5, dim=3, batch=4, seed=4)

    class HSLoss(mx.gluon.HybridBlock):
        def __init__(self):
            super().__init__()
            self.weight = self.params.get("weight", shape=output_weight.shape,
                                          init=mx.init.Constant(mx.nd.array(output_weight)))

        def hybrid_forward(self, F, h, rows, codes, mask, weight):
            return hs_loss(F, h, weight, rows, codes, mask)

    block = HSLoss()
    block.initialize()
    batch = (mx.nd.array(hidden),) + _nd_batch(tree, labels, "float32")
    imperative = block(*batch).asnumpy()
    block.hybridize()
    np.testing.assert_allclose(block(*batch).asnumpy(), imperative, rtol=1e-6)


# --- prediction -----------------------------------------------------------


def test_top_k_over_all_labels_is_a_distribution_of_path_sigmoid_products():
    tree, output_weight, hidden, _ = _random_problem(nlabels=11, dim=6, batch=3, seed=5)
    for h in hidden:
        predictions = hs_top_k(tree, h, output_weight, k=11)
        assert sorted(label for label, _ in predictions) == list(range(11))
        probs = [p for _, p in predictions]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)
        for label, prob in predictions:
            assert prob == pytest.approx(_path_probability(tree, label, output_weight, h), rel=1e-3)


def test_top_k_keeps_the_k_most_probable_labels():
    """Pruning subtrees below the heap's worst entry must not change which labels win."""
    tree, output_weight, hidden, _ = _random_problem(nlabels=15, dim=4, batch=4, seed=6, scale=1.0)
    for h in hidden:
        everything = hs_top_k(tree, h, output_weight, k=15)
        assert hs_top_k(tree, h, output_weight, k=4) == everything[:4]


def test_top_k_threshold_drops_labels_below_it():
    tree, output_weight, hidden, _ = _random_problem(nlabels=8, dim=4, batch=1, seed=7, scale=1.0)
    everything = hs_top_k(tree, hidden[0], output_weight, k=8)
    threshold = (everything[2][1] + everything[3][1]) / 2
    assert hs_top_k(tree, hidden[0], output_weight, k=8, threshold=threshold) == everything[:3]


def test_top_k_on_a_batch_equals_top_k_per_example():
    tree, output_weight, hidden, _ = _random_problem(nlabels=6, dim=3, batch=3, seed=8)
    batched = hs_top_k(tree, hidden, output_weight, k=2)
    assert batched == [hs_top_k(tree, h, output_weight, k=2) for h in hidden]


# --- against the fasttext package -------------------------------------------


def _train_fasttext_hs(tmp_path, lines, dim, lr, epoch):
    """Train fastText with loss='hs' on `lines`, every word vector initialised from a file.

    fastText 0.9.3's DenseMatrix::uniform initialises the input matrix in ten blocks, one per
    thread, so with thread=1 only the first tenth is set and training runs on uninitialised
    memory (usually "Encountered NaN").  Pretrained vectors for every word, "</s>" included,
    overwrite all rows (bucket is 0 for wordNgrams=1), so thread=1 stays deterministic.
    """
    fasttext = pytest.importorskip("fasttext")
    train = tmp_path / "train.txt"
    train.write_text("\n".join(lines) + "\n")
    words = sorted({w for line in lines for w in line.split() if not w.startswith("__label__")})
    words.append("</s>")
    rng = np.random.RandomState(11)
    vectors = tmp_path / "init.vec"
    vectors.write_text(
        f"{len(words)} {dim}\n"
        + "".join(w + " " + " ".join(f"{x:.6f}" for x in rng.uniform(-0.2, 0.2, dim)) + "\n" for w in words)
    )
    return fasttext.train_supervised(
        input=str(train), loss="hs", dim=dim, epoch=epoch, lr=lr, minCount=1, thread=1,
        verbose=0, pretrainedVectors=str(vectors))


def _assert_matches_fasttext_predict(model, texts, k):
    labels, counts = model.get_labels(include_freq=True)
    tree = HuffmanTree(counts)
    output_weight = model.get_output_matrix()
    for text in texts:
        ours = hs_top_k(tree, model.get_sentence_vector(text), output_weight, k=k)
        ref_labels, ref_probs = model.predict(text, k=k)
        assert [labels[i] for i, _ in ours] == list(ref_labels), text
        np.testing.assert_allclose([p for _, p in ours], ref_probs, rtol=0, atol=1e-6)


@pytest.mark.fasttext
def test_top_k_matches_fasttext_predict_on_a_trained_hs_model(tmp_path):
    rng = np.random.RandomState(0)
    shared = [f"s{j}" for j in range(10)]
    lines = []
    for label, freq in enumerate([80, 50, 35, 20, 15]):
        own = [f"w{label}_{j}" for j in range(6)]
        for _ in range(freq):
            tokens = list(rng.choice(own, 3)) + list(rng.choice(shared, 3))
            rng.shuffle(tokens)
            lines.append(f"__label__c{label} " + " ".join(tokens))
    rng.shuffle(lines)
    model = _train_fasttext_hs(tmp_path, lines, dim=5, lr=0.5, epoch=2)
    assert np.abs(model.get_output_matrix()).max() > 0.1, "training should have moved the tree weights"
    _assert_matches_fasttext_predict(
        model, ["w0_1 s3 w1_2", "w3_0 w3_1 s2", "w4_5 s1", "s1 s2", "never seen"], k=3)


@pytest.mark.fasttext
@pytest.mark.parametrize("nlabels", [6, 7, 8])
def test_top_k_orders_ties_like_fasttext(tmp_path, nlabels):
    """lr=0 leaves fastText's output matrix at zero, so every node gives 0.5 and equal-depth
    leaves tie; fastText's order then comes from libstdc++'s push/pop/sort_heap."""
    lines = [f"__label__t{i} w{i} shared" for i in range(nlabels) for _ in range(4)]
    model = _train_fasttext_hs(tmp_path, lines, dim=3, lr=0.0, epoch=1)
    for k in (1, 2, 3, nlabels):
        _assert_matches_fasttext_predict(model, ["shared"], k=k)
