"""Training objectives: the NCML loss (paper section 4)."""

from .ncml_loss import NCMLLoss, NCMLLossConfig, NCMLLossOutput

__all__ = ["NCMLLoss", "NCMLLossConfig", "NCMLLossOutput"]
