"""Loss weighting and gradient balancing strategies behind one interface (SPEC §3).

Build one by name: ``build_weighting("lsb", tasks, beta_step=0.05)``; the names are the keys of
``WEIGHTING_REGISTRY``. In the training step::

    bad = check_finite(losses)               # skip the step (and log ``bad``) if non-empty
    out = strategy.backward(losses, shared_parameters=..., representation=...,
                            backward_fn=self.manual_backward)
    optimizer.step(); log(out.weights, out.loss_scales)
    ...
    strategy.on_epoch_end()                  # once per training epoch (DWA, LSB periods)

Learned parameters (uncertainty's log-variances, GradNorm's weights) are the strategy's own
``extra_parameters()``: give them an optimiser group without weight decay. ``state_dict()``
carries all state (histories, β, RNG), so put the strategy in the checkpoint.

Adding a strategy takes one file in this package (the registry's discovery imports every module
here, and plugin files named by ``plugins=[...]``) plus its ``conf/weighting/<name>.yaml``:

* a loss-based one subclasses ``WeightVectorStrategy`` (implement ``current_weights()``, update
  it in ``_end_period(means)``) or ``LossWeighting`` (implement ``objective(losses, index)``);
* a gradient method subclasses ``GramStrategy`` and implements ``coefficients(gram, losses)``
  (T×T float64 Gram matrix -> c); the batched Jacobian, both gradient spaces and the single
  backward come for free;
* set ``name``, decorate with ``@register_weighting``, list non-parameter state that must
  survive a resume in ``persistent_attrs``, and draw random numbers from ``self._seed(seed)``'s
  ``self.generator`` so they resume too.
"""

from densemtl.weighting.base import (
    WEIGHTING_REGISTRY,
    WeightingOutput,
    WeightingStrategy,
    build_weighting,
    check_finite,
    register_weighting,
    task_vector,
)
from densemtl.weighting.gradient_based import GramStrategy
from densemtl.weighting.loss_based import LossWeighting, WeightVectorStrategy

__all__ = [
    "WEIGHTING_REGISTRY",
    "GramStrategy",
    "LossWeighting",
    "WeightVectorStrategy",
    "WeightingOutput",
    "WeightingStrategy",
    "build_weighting",
    "check_finite",
    "register_weighting",
    "task_vector",
]
