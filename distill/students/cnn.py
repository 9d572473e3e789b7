"""A word CNN student (Kim 2014): the BiLSTM's words and embeddings, convolutions of several widths, max-pooling.

Order-sensitive like the BiLSTM (it reads n-grams of `widths` words), but its convolutions see the whole text at once
where an LSTM steps through it word by word. Everything but the network is the BiLSTM's: the vocabulary, GloVe or
the teacher's vectors, the training loop, inference, and so its exports and its package (a network over word ids).
"""
from __future__ import annotations

import torch
from torch import nn

from .bilstm import PAD, BiLSTMClassifier
from .torch_student import student_parameters


class WordCNNNet(nn.Module):
    """Embedding -> 1-D convolutions (each width zero-padded at both ends, as wide as the text plus width - 1) ->
    ReLU -> max-pool over the positions that touch a real token -> MLP.

    The padding token's embedding is zeros, so a text padded to a longer batch meets the same zeros at its end as
    the convolution's own padding: its logits do not depend on what it is batched with.
    """

    def __init__(self, vocab_size, embedding_dim, widths, filters, hidden, num_classes, dropout):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, width, padding=width - 1) for width in widths)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(filters * len(widths), hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, input_ids):
        lengths = (input_ids != PAD).sum(dim=1, keepdim=True)
        embedded = self.embedding(input_ids).transpose(1, 2)   # batch x dim x tokens
        pooled = []
        for conv in self.convs:
            states = torch.relu(conv(embedded))                  # batch x filters x (tokens + width - 1)
            positions = torch.arange(states.shape[2], device=states.device).unsqueeze(0)
            touches_text = (positions < lengths + conv.kernel_size[0] - 1).unsqueeze(1)
            # after the ReLU every state is >= 0, so a 0 where no word is seen never wins the max
            pooled.append(states.masked_fill(~touches_text, 0.0).max(dim=2).values)
        return self.head(torch.cat(pooled, dim=1))


@student_parameters
class WordCNNClassifier(BiLSTMClassifier):
    """A CNN over words. `widths`: the n-gram sizes its convolutions read; `filters`: how many of each; `hidden`:
    the MLP's width. The rest as BiLSTMClassifier (embedding, loss, training, early stopping)."""

    family = "cnn"
    code_version = 1

    widths: tuple = (3, 4, 5)
    filters: int = 100

    def _word_network(self, vocab_size, embedding_dim, num_classes):
        return WordCNNNet(vocab_size, embedding_dim, tuple(self.widths), self.filters, self.hidden, num_classes,
                          self.dropout)
