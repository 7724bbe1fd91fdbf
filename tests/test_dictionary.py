"""Our Dictionary gives fastText's own ids: same words, same order, same n-gram buckets.

The reference is the fastText 0.9.3 library trained on the normalised ag_news_mini text.
Its `get_sentence_vector` averages the input-matrix rows of `Dictionary::getLine`'s ids
(words, then word n-gram buckets), so averaging the same matrix over *our* ids and getting
the same vector proves the id lists agree, bucket ids included.
"""
import ctypes

import fasttext
import numpy as np
import pytest

from conftest import AG_NEWS

from fasttext_horovod.data_pipeline.dictionary import Dictionary, hash_token, hash_tokens, word_ngram_buckets
from fasttext_horovod.data_pipeline.readers import read_csv_records, tokenize

BUCKET = 200_000
# fastText 0.9.3's DenseMatrix::uniform splits the matrix into 10 blocks but only fills
# blocks 0..thread-1: with fewer than 11 threads rows stay zero, and a zero row cannot tell
# a right id from a wrong one. 11 threads initialise every row (block 10 is the remainder).
FT_THREADS = 11


def fasttext_line(tokens) -> str:
    """The line fastText reads for our tokens: EOS is the newline, which fastText adds back."""
    assert tokens[-1] == b"</s>"
    return b" ".join(tokens[:-1]).decode("utf-8")


@pytest.fixture(scope="module")
def train_records():
    return list(read_csv_records(AG_NEWS / "train.csv", num_classes=4))


@pytest.fixture(scope="module")
def test_records():
    return list(read_csv_records(AG_NEWS / "test.csv", num_classes=4))


@pytest.fixture(scope="module")
def train_file(train_records, tmp_path_factory):
    path = tmp_path_factory.mktemp("fasttext") / "train.txt"
    path.write_bytes(b"".join(b" ".join(r.tokens[:-1]) + b"\n" for r in train_records))
    return path


def train_fasttext(path, word_ngrams, min_count):
    for seed in range(5):
        try:
            return fasttext.train_supervised(input=str(path), dim=10, epoch=1, lr=0.1, wordNgrams=word_ngrams,
                                             bucket=BUCKET, minCount=min_count, thread=FT_THREADS,
                                             verbose=0, seed=seed)
        except Exception as err:  # fastText aborts a diverged run with "Encountered NaN."
            if "NaN" not in str(err):
                raise
    raise AssertionError("fastText diverged with every seed tried")


class Pair:
    """A fastText model and our Dictionary built from the same records with the same settings."""

    def __init__(self, model, dictionary):
        self.model = model
        self.dictionary = dictionary
        self.matrix = model.get_input_matrix()

    def our_vector(self, words):
        return self.matrix[self.dictionary.encode(words)].mean(axis=0)

    def assert_same_sentence_vector(self, words):
        np.testing.assert_allclose(self.our_vector(words), self.model.get_sentence_vector(fasttext_line(words)),
                                   rtol=0, atol=1e-5, err_msg=repr(b" ".join(words)))


@pytest.fixture(scope="module", params=[(2, 1), (3, 1), (2, 2)], ids=["ngrams2", "ngrams3", "mincount2"])
def pair(request, train_records, train_file):
    word_ngrams, min_count = request.param
    model = train_fasttext(train_file, word_ngrams, min_count)
    dictionary = Dictionary.build((r.tokens for r in train_records), min_count=min_count,
                                  bucket=BUCKET, word_ngrams=word_ngrams)
    return Pair(model, dictionary)


@pytest.mark.fasttext
def test_word_list_is_fasttexts_in_the_same_order_with_the_same_counts(pair):
    """Word i is fastText's word i: libstdc++'s unstable sort order on count ties is reproduced."""
    words, counts = pair.model.get_words(include_freq=True)
    assert len(pair.dictionary.words) == len(words)
    assert pair.dictionary.words == [w.encode("utf-8") for w in words]
    np.testing.assert_array_equal(pair.dictionary.word_counts, counts)
    assert pair.dictionary.num_input_rows == pair.matrix.shape[0]


@pytest.mark.fasttext
def test_tie_order_differs_from_first_occurrence_order_so_the_word_check_has_teeth(pair, train_records):
    """A stable sort of words by count (first occurrence breaks ties) would misplace most words."""
    counts = dict(zip(pair.dictionary.words, pair.dictionary.word_counts))
    first_seen = list(dict.fromkeys(w for r in train_records for w in r.words if w in counts))
    stable = sorted(first_seen, key=lambda w: -counts[w])
    assert sum(a != b for a, b in zip(stable, pair.dictionary.words)) > len(stable) // 2


@pytest.mark.fasttext
def test_labels_are_fasttexts_in_the_same_order_with_the_same_counts(pair):
    """Four labels of equal count come out in fastText's (tie-broken) order."""
    labels, counts = pair.model.get_labels(include_freq=True)
    assert pair.dictionary.labels == [l.encode("utf-8") for l in labels]
    np.testing.assert_array_equal(pair.dictionary.label_counts, counts)
    assert len(set(counts)) == 1  # all tied: the order is the sort's, not the counts'


@pytest.mark.fasttext
def test_fasttext_matrix_has_no_zero_rows_so_wrong_ids_would_show(pair):
    """Every input row is initialised, so averaging over a wrong id changes the vector."""
    assert not np.any(np.all(pair.matrix == 0, axis=1))


@pytest.mark.fasttext
def test_every_test_document_averages_to_fasttexts_sentence_vector(pair, test_records):
    """For all of test.csv (OOV words included), our word + n-gram ids give fastText's vector."""
    oov = sum(pair.dictionary.word_id(w) < 0 for r in test_records for w in r.words)
    assert oov > 100
    for record in test_records:
        pair.assert_same_sentence_vector(record.words)


@pytest.mark.fasttext
def test_id_list_is_words_in_order_then_every_ngram_position(pair, test_records):
    """A document of L tokens (EOS included) has its known words then L-k+1 n-grams of each order k."""
    d = pair.dictionary
    for record in test_records[:50]:
        ids = d.encode(record.words)
        known = [d.word_id(w) for w in record.words if d.word_id(w) >= 0]
        length = len(record.words)
        ngrams = sum(max(length - k + 1, 0) for k in range(2, d.word_ngrams + 1))
        assert ids[:len(known)].tolist() == known
        assert len(ids) == len(known) + ngrams
        assert np.all(ids[len(known):] >= d.nwords) and np.all(ids < d.num_input_rows)


@pytest.mark.fasttext
def test_non_ascii_and_unknown_words_hash_into_fasttexts_buckets(pair, train_records):
    """Words with bytes >= 0x80 (hashed as signed chars) feed the same n-gram buckets as fastText's."""
    known = pair.dictionary.words[5].decode()
    lines = [
        f"{known} café naïve",
        f"café {known} naïve résumé",
        "ÜBER straße 東京 zzqxv",  # no known word: only n-grams
        "naïve",
        f"{known} \u00e9\u00e9\u00e9 {known} ÿ",
    ]
    for line in lines:
        words = tokenize(line.encode("utf-8"))
        assert any(b >= 0x80 for w in words for b in w)
        pair.assert_same_sentence_vector(words)


@pytest.mark.fasttext
def test_words_dropped_by_min_count_still_feed_ngrams(train_records, train_file):
    """With minCount=2 a word seen once has no id, but its hash still forms fastText's bigrams."""
    model = train_fasttext(train_file, 2, 2)
    dictionary = Dictionary.build((r.tokens for r in train_records), min_count=2, bucket=BUCKET, word_ngrams=2)
    pair = Pair(model, dictionary)
    full = Dictionary.build((r.tokens for r in train_records), min_count=1, bucket=BUCKET, word_ngrams=2)
    rare = [w for w, c in zip(full.words, full.word_counts) if c == 1][:20]
    assert rare and all(dictionary.word_id(w) < 0 and model.get_word_id(w.decode()) < 0 for w in rare)
    common = [w for w in dictionary.words[:30] if w != b"</s>"]
    for a, b in zip(rare, common):
        words = tokenize(b" ".join([b, a, b, a]))
        ids = dictionary.encode(words)
        assert len(ids) == 3 + 4  # b, b and EOS are known; four bigrams (the last one with EOS)
        pair.assert_same_sentence_vector(words)


@pytest.mark.fasttext
def test_a_literal_eos_inside_a_line_ends_the_document_as_in_getline(pair):
    """fastText's getLine stops at the first `</s>` token, so words after it get no ids."""
    known = [w.decode() for w in pair.dictionary.words[4:10]]
    line = " ".join(known[:3] + ["</s>"] + known[3:])
    words = tokenize(line.encode())
    assert pair.dictionary.encode(words).tolist() == pair.dictionary.encode(words[:4]).tolist()
    pair.assert_same_sentence_vector(words)


def fnv1a_signed_char(token: bytes) -> int:
    """fastText's hash written out from its C++: h ^= uint32_t(int8_t(c)); h *= 16777619."""
    h = ctypes.c_uint32(2166136261)
    for byte in token:
        h = ctypes.c_uint32(h.value ^ ctypes.c_uint32(ctypes.c_int8(byte).value).value)
        h = ctypes.c_uint32(h.value * 16777619)
    return ctypes.c_int32(h.value).value


@pytest.mark.parametrize("token", [b"", b"a", b"foobar", b"</s>", b"__label__1",
                                   "café".encode(), "naïve".encode(), "東京".encode(), b"\xff\x80\x7f"])
def test_hash_token_is_fnv1a_over_signed_chars(token):
    """hash_token equals the signed-char FNV-1a rule, as an int32."""
    assert hash_token(token) == fnv1a_signed_char(token)


def test_hash_token_matches_standard_fnv1a_on_ascii_and_differs_on_high_bytes():
    """ASCII hashes are the published FNV-1a vectors; a byte >= 0x80 is sign-extended instead."""
    assert hash_token(b"") == ctypes.c_int32(0x811C9DC5).value
    assert hash_token(b"a") == ctypes.c_int32(0xE40C292C).value
    assert hash_token(b"foobar") == ctypes.c_int32(0xBF9CF968).value
    unsigned = 2166136261
    for byte in "é".encode():
        unsigned = ((unsigned ^ byte) * 16777619) & 0xFFFFFFFF
    assert hash_token("é".encode()) != ctypes.c_int32(unsigned).value


def test_ngram_buckets_match_fasttexts_formula_written_with_wrapping_ints():
    """word_ngram_buckets equals h = h * 116049371 + hash (uint64 from int32) mod bucket, per position."""
    words = [b"the", "café".encode(), b"x", b"</s>", b"a", b"b"]
    hashes = np.array([hash_token(w) for w in words], dtype=np.int32)
    doc_ends = np.array([4, 4, 4, 4, 6, 6])
    got = word_ngram_buckets(hashes, doc_ends, 3, BUCKET)
    for i in range(len(words)):
        h = ctypes.c_uint64(int(hashes[i]))
        for order in (2, 3):
            j = i + order - 1
            if j >= doc_ends[i]:
                assert got[i, order - 2] == -1
                continue
            h = ctypes.c_uint64(h.value * 116049371 + ctypes.c_uint64(int(hashes[j])).value)
            assert got[i, order - 2] == h.value % BUCKET


def test_hash_tokens_equals_hash_token_for_every_length_and_byte():
    """The vectorised hash agrees token by token, across lengths either side of its cut-over
    to one-by-one hashing and with bytes >= 0x80."""
    rng = np.random.default_rng(0)
    tokens = [rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
              for length in rng.choice([0, 1, 2, 7, 63, 64, 65, 300], size=2000)]
    for some in (tokens, tokens[:10], []):  # numpy's way, and one by one for a few tokens
        assert hash_tokens(some).tolist() == [hash_token(token) for token in some]


def test_vectorised_hashes_equal_the_one_token_rule_on_every_real_token_and_odd_bytes(train_records):
    tokens = list(dict.fromkeys(t for r in train_records for t in r.tokens))
    tokens += [b"", bytes(range(256)), b"\xff" * 300, "naïve café".encode(), b"\x80a"]
    assert hash_tokens(tokens).tolist() == [hash_token(t) for t in tokens]


def test_a_released_word_index_is_rebuilt_by_the_next_lookup():
    dictionary = Dictionary.build([tokenize(b"__label__a to be or not to be"), tokenize(b"__label__b be quick")])
    before = [dictionary.word_id(word) for word in (b"be", b"quick", b"absent")]
    dictionary.release_word_index()
    assert "_word_ids" not in vars(dictionary)  # the index's memory is given back
    assert [dictionary.word_id(word) for word in (b"be", b"quick", b"absent")] == before
    assert before[0] >= 0 and before[2] == -1
