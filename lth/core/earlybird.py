"""Early-bird tickets (You et al., ICLR 2020): the mask a network would get stops changing early in training.

At each evaluation of round 0 the mask that magnitude pruning would give at the target sparsity is computed and
kept with the previous ones (a window of ``window`` masks). The ticket is drawn when the largest distance between
the newest mask and each earlier one in the window is below ``epsilon``.

The distance is a normalised Hamming distance, the positions where two masks differ over either

- ``all``: every position (You et al.'s, the default). Two masks that keep a fraction d each differ on at most
  2d of the positions, so at high sparsity every pair is close: at 1.9% weights remaining the distance never
  exceeds 0.038 and the default epsilon 0.1 holds as soon as the window is full.
- ``kept``: the most they can differ on, ``|a xor b| / (2 * kept)`` (masks keeping ``kept`` weights each). It
  lies in [0, 1] at every sparsity and equals ``all`` at 50%.

Pure tensor code: no Lightning.
"""

from __future__ import annotations

from collections import deque

from lth.core.masks import Mask

DISTANCES = ("all", "kept")


def mask_distance(a: Mask, b: Mask, over: str = "all") -> float:
    """Normalised Hamming distance between two masks of the same tensors, over ``all`` positions or over the
    most that masks keeping these many weights can differ on (``kept``: 1 when disjoint)."""
    differ = sum(int((a[n] ^ b[n].to(a[n].device)).count_nonzero()) for n in a)
    most = a.total() if over == "all" else a.remaining() + b.remaining()
    return differ / most if most else 0.0


class EarlyBirdWindow:
    """The last ``window`` masks and the draw criterion: newest vs each earlier one, all closer than ``epsilon``."""

    def __init__(self, window: int = 5, epsilon: float = 0.1, distance: str = "all") -> None:
        if window < 2:
            raise ValueError(f"window={window}: needs at least 2 masks to compare")
        if distance not in DISTANCES:
            raise ValueError(f"distance={distance!r}: allowed {', '.join(DISTANCES)}")
        self.window, self.epsilon, self.distance = window, epsilon, distance
        self.masks: deque[Mask] = deque(maxlen=window)
        self.distances: list[float] = []  # the largest distance at each evaluation once the window is full

    def add(self, mask: Mask) -> bool:
        """Add the newest mask; True when the window is full and every earlier mask is within ``epsilon`` of it."""
        self.masks.append(Mask({n: m.detach().cpu().clone() for n, m in mask.items()}))
        if len(self.masks) < self.window:
            return False
        newest = self.masks[-1]
        largest = max(mask_distance(newest, earlier, self.distance) for earlier in list(self.masks)[:-1])
        self.distances.append(largest)
        return largest < self.epsilon

    def state_dict(self) -> dict:
        """What a resumed round needs: the masks in the window and the distances so far."""
        return {"masks": [dict(m) for m in self.masks], "distances": list(self.distances)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.masks = deque((Mask(m) for m in state["masks"]), maxlen=self.window)
        self.distances = list(state["distances"])
