"""torch's CPU generator in numpy: `TorchGenerator(seed).randperm(n)` equals
`torch.randperm(n, generator=torch.Generator().manual_seed(seed))`, value for value.

The data stream (data.Batches) and the evaluation subsets draw their permutations
here, so a run draws the same batches with torch installed or not. torch's CPU
generator is a 32-bit Mersenne Twister seeded with the low 32 bits of the seed
(the standard init_genrand), and its randperm below 2^32/20 elements is the
Fisher-Yates shuffle `swap(r[i], r[i + random() % (n - i)])` for i = 0 .. n-2, one
32-bit draw each. numpy's MT19937 with its legacy seeding is that same twister.
tests/test_train_c_notorch.py checks the equality against torch.
"""

from __future__ import annotations

import numpy as np


class TorchGenerator:
    """A torch.Generator().manual_seed(seed) on the CPU, for randperm."""

    def __init__(self, seed: int):
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(int(seed) & 0xFFFFFFFF)

    def randperm(self, n: int) -> np.ndarray:
        """torch.randperm(n, generator=...) as int64, advancing the generator as torch does."""
        perm = np.arange(n, dtype=np.int64)
        if n < 2:
            return perm
        draws = self._bits.random_raw(n - 1).astype(np.int64)
        picks = (draws % np.arange(n, 1, -1, dtype=np.int64)) + np.arange(n - 1, dtype=np.int64)
        for i, z in enumerate(picks.tolist()):
            perm[i], perm[z] = perm[z], perm[i]
        return perm
