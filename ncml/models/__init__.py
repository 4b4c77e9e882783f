"""Backbones: autoregressive density models ``p_θ,t(x)`` with exact likelihoods.

``ARBackbone`` is the contract (teacher-forced ``forward``, ``log_prob``, ``score``, the ``sample`` template);
``NCPNModel`` (PixelCNN++ with causal axial attention) and ``ARTransformerModel`` (a causal transformer over pixels)
implement it with the logistic-mixture likelihood head ``LogisticMixture`` and the noise/class conditioning
``ConditioningEmbedding``.
"""

from .ar_transformer import ARTransformerConfig, ARTransformerModel
from .autoregressive import ARBackbone, BackboneOutput
from .distributions import LogisticMixture
from .embeddings import ConditioningEmbedding
from .modeling_utils import ModelMixin
from .ncpn import NCPNConfig, NCPNModel

__all__ = ["ARBackbone", "BackboneOutput", "NCPNConfig", "NCPNModel", "ARTransformerConfig", "ARTransformerModel",
           "LogisticMixture", "ConditioningEmbedding", "ModelMixin"]
