"""ncml: noise conditional maximum likelihood for autoregressive image models.

Public names are imported lazily (``ncml.NCPNModel`` imports ``ncml.models.ncpn`` on first use), so
``import ncml`` stays fast and optional extras are only needed by the parts that use them.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

_LAZY = {
    # configs and Hub I/O
    "ConfigMixin": "ncml.configuration_utils",
    "ModelMixin": "ncml.models.modeling_utils",
    # backbones
    "ARBackbone": "ncml.models.autoregressive",
    "BackboneOutput": "ncml.models.autoregressive",
    "NCPNConfig": "ncml.models.ncpn",
    "NCPNModel": "ncml.models.ncpn",
    "ARTransformerConfig": "ncml.models.ar_transformer",
    "ARTransformerModel": "ncml.models.ar_transformer",
    # schedulers
    "SDEScheduler": "ncml.schedulers",
    "SDESchedulerConfig": "ncml.schedulers",
    "SDESchedulerOutput": "ncml.schedulers",
    "VESDEScheduler": "ncml.schedulers",
    "VPSDEScheduler": "ncml.schedulers",
    "SubVPSDEScheduler": "ncml.schedulers",
    # loss
    "NCMLLoss": "ncml.losses.ncml_loss",
    "NCMLLossConfig": "ncml.losses.ncml_loss",
    "NCMLLossOutput": "ncml.losses.ncml_loss",
    # pipelines
    "Pipeline": "ncml.pipelines.pipeline_utils",
    "NCMLPipeline": "ncml.pipelines.pipeline_ncml",
    "NCMLPipelineOutput": "ncml.pipelines",
    "NCMLClassConditionalPipeline": "ncml.pipelines.pipeline_ncml_class_conditional",
    "NCMLInpaintPipeline": "ncml.pipelines.pipeline_ncml_inpaint",
    # bundled pretrained pipelines
    "pretrained": "ncml.bundled",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ncml' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
