"""Helpers for the strategy tests: linear losses with known task gradients."""

import pytest
import torch
from torch import nn


class Linear:
    """L_t = a_tᵀθ + b_t with θ a 2-vector parameter: ∇_θ L_t = a_t exactly, at any θ."""

    def __init__(self, rows, offsets=None) -> None:
        self.a = torch.tensor(rows, dtype=torch.float64)
        self.b = torch.tensor(offsets or [10.0] * len(rows), dtype=torch.float64)
        self.theta = nn.Parameter(torch.zeros(self.a.shape[1], dtype=torch.float64))

    def losses(self, tasks) -> dict:
        self.theta.grad = None
        return {t: self.a[i] @ self.theta + self.b[i] for i, t in enumerate(tasks)}


@pytest.fixture
def linear():
    return Linear
