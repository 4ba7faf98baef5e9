"""The Pareto front of trials that trade val loss against the train/val gap.

The score folds both into one number with a chosen λ; the front shows every trial that some λ
could prefer, so a reader sees what a different gap penalty would have picked.

    >>> pareto_front([(0.1, 0.5), (0.3, 0.2), (0.4, 0.4), (0.0, 0.9)])
    [0, 1, 3]
"""

from __future__ import annotations

import math
from typing import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending) of the finite points no other dominates, minimizing both coordinates.

    A point dominates another when it is no worse in both coordinates and better in one; equal
    points do not dominate each other, so duplicates on the front are all kept. One sweep along
    the first coordinate: O(n log n), for studies with thousands of trials.
    """
    front: list[int] = []
    lowest = math.inf
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1])):
        x, y = points[i]
        if y < lowest or (front and y == lowest and tuple(points[front[-1]]) == (x, y)):
            front.append(i)
            lowest = y
    return sorted(front)
