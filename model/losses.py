"""The losses a model can train with, by fastText's names; no MXNet, so settings can be
checked before MXNet loads.

    softmax  one distribution over the labels (fastText's default)
    hs       hierarchical softmax over fastText's Huffman tree of label counts
    ova      one-vs-all: an independent sigmoid per label, for multi-label data
"""
LOSSES = ("softmax", "hs", "ova")
