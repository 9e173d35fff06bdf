"""Shared building blocks: embeddings, attention, transformer encoder."""
from seqrec.nn.dropout import Dropout
from seqrec.nn.attention import MultiHeadAttention, attention_mask, key_padding_mask
from seqrec.nn.embeddings import SequenceEmbedding, position_ids
from seqrec.nn.transformer import FeedForward, TransformerBlock, TransformerEncoder

__all__ = ["Dropout", "MultiHeadAttention", "attention_mask", "key_padding_mask", "SequenceEmbedding", "position_ids",
           "FeedForward", "TransformerBlock", "TransformerEncoder"]
