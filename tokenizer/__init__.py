"""Tokenizers: SentencePiece training, llama2.c's tokenizer.bin, and a dependency-free encoder."""

from .tokenizer import BOS_ID, EOS_ID, Tokenizer

__all__ = ["BOS_ID", "EOS_ID", "Tokenizer", "train_tokenizer"]


def train_tokenizer(*args, **kwargs):  # sentencepiece imported only when training one
    from .train_sp import train_tokenizer as _train

    return _train(*args, **kwargs)
