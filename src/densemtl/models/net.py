"""``DenseMTLNet``: backbone + optional task conditioning + decoder + per-task heads (ASTMT)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor, nn

from .backbones import Backbone, build_backbone
from .base import ARCHITECTURES, MultiTaskNet
from .conditioning import PerTaskModule, TaskRouter, condition_blocks
from .deeplab import DeepLabV3PlusDecoder, UberNetDecoder
from .heads import TaskHeads

__all__ = [
    "DECODERS",
    "DECODER_EXECUTIONS",
    "EXECUTIONS",
    "SE_CHOICES",
    "DenseMTLNet",
]

SE_CHOICES = ("none", "decoder", "encoder_decoder")
DECODERS = ("deeplab", "ubernet")
EXECUTIONS = ("auto", "sequential", "stacked", "shared_encoder")
DECODER_EXECUTIONS = ("stacked", "sequential")


def _choice(kind: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")
    return value


@ARCHITECTURES.register("deeplab")
class DenseMTLNet(MultiTaskNet):
    """Multi-task dense prediction network; single-tasking with task attention when conditioned.

    Without conditioning (``se="none"``, no adapters, no per-task BN) it is the multi-task
    baseline: one shared forward, one head per task (with one task: a single-task network).
    With conditioning, each task runs through its own SE / BN / adapters, in one of three
    ``execution`` modes that give the same numbers:

    * ``sequential``: T passes of the whole network, one per task;
    * ``stacked``: the stem once, then one pass over the batch repeated T times (T·B) with
      task-indexed parameters;
    * ``shared_encoder``: only when the encoder is not conditioned (decoder-only SE): the encoder
      once, then the decoder for every task, stacked or sequential (``decoder_execution``);
    * ``auto``: ``shared_encoder`` when the encoder is not conditioned, else ``sequential``.

    Shared BNs (the stem, an unconditioned encoder) see the same batch statistics in every mode,
    but update their running statistics once per pass: T times per call in ``sequential`` mode,
    once in the others.

    ``per_task_bn``: None = per-task BN wherever SE or adapters make a part task-specific (the
    paper; encoder blocks and/or decoder, stem always shared); True = in every encoder block and
    the decoder; False = nowhere.

    After each forward, ``features[task]`` is the exact features tensor that task's head consumed
    (the discriminator's input), and ``shared_representation`` holds the tensors after which every
    module is task-specific, or None when shared and task-specific modules interleave. The
    baseline's decoder features come as ``{task: view}``, one view per head, so representation-
    space gradient methods get every ∂L_t/∂z from one backward through the heads (not T batched
    ones through all of them); an unconditioned UberNet gives its encoder features ``(low, high)``.
    """

    def __init__(
        self,
        tasks: Mapping[str, int],
        backbone: Mapping | Backbone | None = None,
        decoder: str = "deeplab",
        decoder_width: int = 64,
        se: str = "none",
        per_task_bn: bool | None = None,
        adapters: bool = False,
        execution: str = "sequential",
        decoder_execution: str = "stacked",
    ) -> None:
        super().__init__(tasks)
        self.decoder_kind = _choice("decoder", decoder, DECODERS)
        self.se = _choice("se", se, SE_CHOICES)
        _choice("execution", execution, EXECUTIONS)
        self.decoder_execution = _choice("decoder_execution", decoder_execution, DECODER_EXECUTIONS)
        if per_task_bn not in (None, True, False):
            raise ValueError(f"per_task_bn must be None, True or False, got {per_task_bn!r}")
        if decoder == "ubernet" and se == "decoder":
            raise ValueError(
                "se='decoder' does not apply to the UberNet decoder, which is already one decoder "
                "per task; choose se='none' or 'encoder_decoder' (per-task SE in the encoder)"
            )

        self.backbone = (
            backbone if isinstance(backbone, Backbone) else build_backbone(**dict(backbone or {}))
        )
        enc_se = se == "encoder_decoder"
        dec_se = se in ("decoder", "encoder_decoder") and decoder == "deeplab"
        enc_bn = (enc_se or adapters) if per_task_bn is None else per_task_bn
        dec_bn = (dec_se or adapters) if per_task_bn is None else per_task_bn
        dec_bn = dec_bn and decoder == "deeplab"
        dec_adapters = adapters and decoder == "deeplab"
        self.encoder_conditioned = enc_se or enc_bn or adapters
        self.decoder_conditioned = dec_se or dec_bn or dec_adapters
        self.has_shared_representation = not (self.encoder_conditioned
                                               or self.decoder_conditioned)
        if execution == "auto":
            execution = "sequential" if self.encoder_conditioned else "shared_encoder"
        self.execution = execution
        if execution == "shared_encoder" and self.encoder_conditioned:
            raise ValueError(
                "execution='shared_encoder' needs an encoder that is the same for all tasks, but "
                f"this one is task-conditioned (se={se!r}, adapters={adapters}, "
                f"per_task_bn={per_task_bn}); use 'sequential' or 'stacked', or condition the "
                "decoder only (se='decoder', adapters=False, per_task_bn None or False)"
            )

        self.output_stride = self.backbone.output_stride
        self.router = TaskRouter(self.tasks)
        conditioning = dict(tasks=self.tasks, router=self.router)
        condition_blocks(
            self.backbone.conditioning_slots(),
            **conditioning,
            squeeze_excite=enc_se,
            batch_norm=enc_bn,
            adapters=adapters,
        )
        b = self.backbone
        if decoder == "deeplab":
            self.decoder = DeepLabV3PlusDecoder(
                b.low_channels,
                b.high_channels,
                decoder_width,
                b.output_stride,
                separable=b.mobile,
                act_layer=nn.ReLU6 if b.mobile else nn.ReLU,
            )
            condition_blocks(
                list(self.decoder.conditioning_slots()),
                **conditioning,
                squeeze_excite=dec_se,
                batch_norm=dec_bn,
                adapters=dec_adapters,
            )
            head_in: int | dict[str, int] = decoder_width
        else:
            self.decoder = UberNetDecoder(b.low_channels, b.high_channels, dict(tasks))
            head_in = {t: 2 * c for t, c in tasks.items()}
        self.heads = TaskHeads(head_in, tasks)
        self.head_inputs = head_in
        self.per_task_features = decoder == "ubernet" or self.decoder_conditioned

    @property
    def feature_width(self) -> int:
        """The decoder width (DeepLab), or each UberNet branch's 2·C_t when they all agree."""
        if isinstance(self.head_inputs, int):
            return self.head_inputs
        widths = set(self.head_inputs.values())
        if len(widths) != 1:
            raise ValueError(
                f"the UberNet decoder's features differ in width per task ({self.head_inputs}): "
                "no single feature width (e.g. for the adversarial discriminator)"
            )
        return widths.pop()

    def _decode(
        self, low: Tensor, high: Tensor, tasks: tuple[str, ...], stacked: bool = False
    ) -> dict[str, Tensor]:
        """Features per task; a ``stacked`` batch of T·B rows holds task k's rows in chunk k."""
        if self.decoder_kind == "deeplab":
            features = self.decoder(low, high)
            chunks = features.chunk(len(tasks)) if stacked else [features] * len(tasks)
            return dict(zip(tasks, chunks))
        if stacked:
            pairs = zip(low.chunk(len(tasks)), high.chunk(len(tasks)))
            return {t: self.decoder(lo, hi, t) for t, (lo, hi) in zip(tasks, pairs)}
        return {t: self.decoder(low, high, t) for t in tasks}

    def _each_task(
        self, tasks: tuple[str, ...], encode: Callable[[], tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        """One routed pass per task (``encode`` runs inside the routing)."""
        features = {}
        for task in tasks:
            with self.router.route((task,)):
                features.update(self._decode(*encode(), (task,)))
        return features

    def _predict(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
        """Head outputs at the decoder's stride for ``tasks``."""

        def repeat(x: Tensor) -> Tensor:
            return x.repeat(len(tasks), 1, 1, 1)

        if not (self.encoder_conditioned or self.decoder_conditioned):
            low, high = self.backbone(images)
            features = self._decode(low, high, tasks)
            if self.decoder_kind == "deeplab":  # one view of the decoder features per head
                features = {t: f.view_as(f) for t, f in features.items()}
                self.shared_representation = dict(features)
            else:
                self.shared_representation = (low, high)
        elif self.execution == "sequential":
            features = self._each_task(tasks, lambda: self.backbone(images))
        elif self.execution == "stacked":  # the stem is never conditioned: run it once
            stem = self.backbone.forward_stem(images)
            with self.router.route(tasks):
                encoded = self.backbone.forward_body(repeat(stem))
                features = self._decode(*encoded, tasks, stacked=True)
        else:  # shared_encoder: the encoder is unconditioned, so it runs outside any routing
            encoded = self.backbone(images)
            if self.decoder_execution == "sequential":
                features = self._each_task(tasks, lambda: encoded)
            else:
                with self.router.route(tasks):
                    features = self._decode(*map(repeat, encoded), tasks, stacked=True)
        self.features = features
        return {t: self.heads(f, t) for t, f in features.items()}

    def task_modules(self, task: str) -> list[nn.Module]:
        """``task``'s SE / BN / adapter copies, decoder branch and head."""
        return [m.per_task[task] for m in self.modules() if isinstance(m, PerTaskModule)]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Weights of the last shared layer (GradNorm's W): the DeepLab decoder's last conv, or
        the encoder's last block under the UberNet decoder (whose decoder is per task).

        Only multi-dimensional shared weights: a task-conditioned layer's per-task copies
        (adapters, SE, BN) belong to single tasks, and biases / BN scales are left out.
        """
        shared = {id(p) for p in self.shared_parameters()}
        if self.decoder_kind == "deeplab":
            layer = self.decoder.refine.conv
        else:
            layer = list(self.backbone.conditioning_slots())[-1][0]
        return [p for p in layer.parameters() if id(p) in shared and p.dim() > 1]
