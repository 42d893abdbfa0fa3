"""llama2.c's tokenizer.bin, and a dependency-free encoder/decoder that reads it.

Layout: int32 max_token_length, then for each token id in order: float32 score,
int32 byte length, the piece's UTF-8 bytes (no terminator). SentencePiece's
"▁" is stored as a plain space; BOS and EOS as "\\n<s>\\n" and "\\n</s>\\n" (what
llama2.c's runner prints for them); byte pieces as "<0xNN>".

`Tokenizer.encode` is llama2.c's algorithm, the one the C runner uses: a dummy
prefix space, one token per UTF-8 character (byte pieces where the character is
missing and the vocabulary has them, else an error naming the character), then
repeated merging of the adjacent pair whose concatenation is a piece with the
best score. The problem convention shared by training, the C runner and
evaluation lives here too: input = [BOS] + encode(prompt); the model continues
with " ANSWER" and EOS.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from tinymath import fileio

BOS_ID, EOS_ID = 1, 2
MAX_PIECE_BYTES = 1 << 16
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")


@dataclass
class Tokenizer:
    pieces: list[bytes]
    scores: list[float]
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __post_init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        for i, p in enumerate(self.pieces):
            self._ids.setdefault(p, i)
        # byte fallback works as in llama2.c: id = byte + 3, only when <0x00>..<0xFF> sit there
        self.byte_fallback = len(self.pieces) >= 259 and all(
            self.pieces[i + 3] == f"<0x{i:02X}>".encode() for i in range(256))

    # ---- files ----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer":
        data = Path(path).read_bytes()
        if len(data) < 4:
            raise ValueError(f"{path}: not a tokenizer.bin (only {len(data)} bytes)")
        (max_len,) = struct.unpack_from("<i", data, 0)
        if not 0 < max_len <= MAX_PIECE_BYTES:
            raise ValueError(f"{path}: bad max token length {max_len}")
        off, pieces, scores = 4, [], []
        while off < len(data):
            if off + 8 > len(data):
                raise ValueError(f"{path}: truncated at token {len(pieces)} (byte {off})")
            score, n = struct.unpack_from("<fi", data, off)
            off += 8
            if not 0 <= n <= max_len or off + n > len(data):
                raise ValueError(f"{path}: token {len(pieces)} has a bad length {n} (max {max_len}, "
                                 f"{len(data) - off} bytes left)")
            pieces.append(data[off:off + n])
            scores.append(score)
            off += n
        if len(pieces) <= EOS_ID:
            raise ValueError(f"{path}: only {len(pieces)} tokens; need at least <unk>, <s>, </s>")
        return cls(pieces, scores)

    def to_bytes(self) -> bytes:
        out = [struct.pack("<i", max(len(p) for p in self.pieces))]
        for p, s in zip(self.pieces, self.scores):
            out.append(struct.pack("<fi", s, len(p)) + p)
        return b"".join(out)

    def save(self, path: str | Path) -> None:
        fileio.write_bytes(path, self.to_bytes())

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    # ---- encoding (llama2.c's algorithm) -------------------------------------------------
    def _id(self, piece: bytes) -> int | None:
        return self._ids.get(piece)

    def encode(self, text: str, bos: bool = False, eos: bool = False, dummy_prefix: bool = True) -> list[int]:
        ids: list[int] = [self.bos_id] if bos else []
        if text and dummy_prefix:
            space = self._id(b" ")
            if space is None:
                raise ValueError("tokenizer has no space piece for the dummy prefix")
            ids.append(space)
        for ch in text:
            b = ch.encode("utf-8")
            i = self._id(b)
            if i is not None:
                ids.append(i)
            elif self.byte_fallback:
                ids.extend(x + 3 for x in b)
            else:
                raise ValueError(f"character {ch!r} (U+{ord(ch):04X}) is not in the tokenizer's vocabulary")
        ids = self._merge(ids)
        if eos:
            ids.append(self.eos_id)
        return ids

    def _merge(self, ids: list[int]) -> list[int]:
        start = 1 if ids and ids[0] == self.bos_id else 0
        while True:
            best, best_i, best_id = float("-inf"), -1, -1
            for i in range(start, len(ids) - 1):
                j = self._id(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i, best_id = self.scores[j], i, j
            if best_i < 0:
                return ids
            ids[best_i:best_i + 2] = [best_id]

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        for i in ids:
            if i in (self.bos_id, self.eos_id):
                continue
            piece = self.pieces[i]
            m = _BYTE_PIECE.fullmatch(piece.decode("utf-8", "replace"))
            out += bytes([int(m.group(1), 16)]) if m else piece
        return out.decode("utf-8", "replace")

    # ---- the problem convention ------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """What the model is fed: [BOS] + encode(prompt)."""
        return self.encode(prompt, bos=True)

    def encode_problem(self, prompt: str, answer: str) -> tuple[list[int], int]:
        """[BOS] + encode(prompt) + encode(" " + answer, no prefix) + [EOS], and the prompt's length."""
        head = self.encode_prompt(prompt)
        tail = self.encode(" " + answer, dummy_prefix=False, eos=True)
        return head + tail, len(head)

    def decode_answer(self, ids: list[int]) -> str:
        """The answer in generated ids (up to EOS), without surrounding spaces."""
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.decode(ids).strip()
