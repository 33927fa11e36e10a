"""Loss weighting and gradient balancing strategies behind one interface (SPEC §3).

Build one by name: ``build_weighting("lsb", tasks, beta_step=0.05)``; the names are the keys of
``WEIGHTING_REGISTRY``. A strategy declares what it needs (``strategy.needs``: which tensors
its gradients are taken w.r.t., whether it forms the Gram matrix or the gradient matrix, how
many independent loss samples per step, whether it wants the losses after the step), and both
training loops provide exactly that through ``feed.py``::

    samples = loss_samples(net, tasks, batch, names, strategy.needs.samples)
    out = strategy.backward(samples[-1], extra_losses=samples[:-1],
                            **backward_inputs(strategy, net), backward_fn=manual_backward)
    optimizer.step(); log(out.weights, out.loss_scales)
    if strategy.needs.post_step_losses: strategy.after_step(losses_after_the_step)
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
  backward come for free (``SampledGramStrategy`` instead: ``sample_coefficients(cross)`` from
  the cross Gram of two samples);
* anything else subclasses ``WeightingStrategy``, overrides ``needs`` and ``_backward`` (e.g.
  ``flat_task_gradients`` + ``backward_with_update`` for a new shared update);
* set ``name``, decorate with ``@register_weighting``, list non-parameter state that must
  survive a resume in ``persistent_attrs``, and draw random numbers from ``self._seed(seed)``'s
  ``self.generator`` so they resume too.
"""

from densemtl.weighting.base import (
    WEIGHTING_REGISTRY,
    Needs,
    StepInputs,
    WeightingOutput,
    WeightingStrategy,
    build_weighting,
    check_finite,
    register_weighting,
    subset_weightings,
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
    "Needs",
    "StepInputs",
    "WeightingStrategy",
    "build_weighting",
    "check_finite",
    "register_weighting",
    "subset_weightings",
    "task_vector",
]
