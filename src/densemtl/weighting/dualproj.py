"""DualProj (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

The preference-weighted mean of the task gradients, Jᵀp (p = 1/T by default), projected onto
the dual cone {x : Jx ≥ 0} of the task gradients, so the update increases no loss to first
order. It is the projection of gradient episodic memory (Lopez-Paz & Ranzato, NeurIPS 2017,
eq. 11) applied to the mean; UPGrad projects every gradient instead and averages. In the dual
the projection is Jᵀw with w = argmin_{v ≥ p} vᵀGv, one Gram-only quadratic programme.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from densemtl.weighting.base import register_weighting, task_vector
from densemtl.weighting.gradient_based import GramStrategy
from densemtl.weighting.upgrad import dual_cone_weights


@register_weighting
class DualProj(GramStrategy):
    """DualProj: the preference-weighted mean gradient projected onto the dual cone.

    ``preference``: a per-task vector (list or dict), normalised to sum 1; default uniform.
    Exact (the same unregularised non-negative least squares as ``upgrad``; torchjd adds 1e-4
    to the normalised G's diagonal, which the oracle test turns down).
    """

    name = "dualproj"

    def __init__(self, tasks: Sequence[str], space: str | None = None,
                 preference: Sequence[float] | Mapping[str, float] | None = None) -> None:
        super().__init__(tasks, space)
        if preference is None:
            self.preference = np.full(self.num_tasks, 1.0 / self.num_tasks)
        else:
            p = np.array(task_vector(preference, self.tasks, "dualproj preference"))
            self.preference = p / p.sum()

    def coefficients(self, gram: np.ndarray, losses: np.ndarray) -> np.ndarray:
        return dual_cone_weights(gram, self.preference)
