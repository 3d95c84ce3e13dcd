"""Early-bird tickets (You et al., ICLR 2020): the mask a network would get stops changing early in training.

At each evaluation of round 0 the mask that magnitude pruning would give at the target sparsity is computed and
kept with the previous ones (a window of ``window`` masks). The ticket is drawn when the largest distance between
the newest mask and each earlier one in the window is below ``epsilon``.

The distance is the normalised Hamming distance: the weights on which two masks differ over the most they can
differ on, ``|a xor b| / (2 * kept)`` for masks that keep ``kept`` weights each. It lies in [0, 1], and at 50%
sparsity it is You et al.'s (differing positions over all positions); dividing by the kept weights instead of
all of them keeps it meaningful at high sparsity, where two masks that share no weight would otherwise be "close".

Pure tensor code: no Lightning.
"""

from __future__ import annotations

from collections import deque

from lth.core.masks import Mask


def mask_distance(a: Mask, b: Mask) -> float:
    """Normalised Hamming distance between two masks of the same tensors: 0 when equal, 1 when disjoint."""
    differ = sum(int((a[n] ^ b[n].to(a[n].device)).count_nonzero()) for n in a)
    most = a.remaining() + b.remaining()
    return differ / most if most else 0.0


class EarlyBirdWindow:
    """The last ``window`` masks and the draw criterion: newest vs each earlier one, all closer than ``epsilon``."""

    def __init__(self, window: int = 5, epsilon: float = 0.1) -> None:
        if window < 2:
            raise ValueError(f"window={window}: needs at least 2 masks to compare")
        self.window, self.epsilon = window, epsilon
        self.masks: deque[Mask] = deque(maxlen=window)
        self.distances: list[float] = []  # the largest distance at each evaluation once the window is full

    def add(self, mask: Mask) -> bool:
        """Add the newest mask; True when the window is full and every earlier mask is within ``epsilon`` of it."""
        self.masks.append(Mask({n: m.detach().cpu().clone() for n, m in mask.items()}))
        if len(self.masks) < self.window:
            return False
        newest = self.masks[-1]
        largest = max(mask_distance(newest, earlier) for earlier in list(self.masks)[:-1])
        self.distances.append(largest)
        return largest < self.epsilon

    def state_dict(self) -> dict:
        """What a resumed round needs: the masks in the window and the distances so far."""
        return {"masks": [dict(m) for m in self.masks], "distances": list(self.distances)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.masks = deque((Mask(m) for m in state["masks"]), maxlen=self.window)
        self.distances = list(state["distances"])

