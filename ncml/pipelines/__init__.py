"""Pipelines: two-part sampling (AR at ``t_start``, then score-based refinement), saved as Hub folders."""

from .pipeline_ncml import NCMLPipeline
from .pipeline_ncml_class_conditional import NCMLClassConditionalPipeline
from .pipeline_ncml_inpaint import NCMLInpaintPipeline
from .pipeline_utils import NCMLPipelineOutput, Pipeline
from .refinement import RefinementOutput, refine

__all__ = ["Pipeline", "NCMLPipelineOutput", "NCMLPipeline", "NCMLClassConditionalPipeline",
           "NCMLInpaintPipeline", "refine", "RefinementOutput"]
