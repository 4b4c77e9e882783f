"""``SamplingConfig``: the recommended sampler settings stored with a pipeline (``sampling_config.json``).

Like transformers' generation config: the training script and the results / ablation scripts write the best
setting they measured for a model into its pipeline folder, and a pipeline call uses it for every argument left
as ``None``; explicit arguments still win. A folder without the file gets ``SamplingConfig()``, whose
``t_start=None`` means ``t_max / 2`` of the pipeline's scheduler.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from .. import hub_utils
from ..configuration_utils import config_from_dict, config_to_dict
from ..schedulers.scheduling_utils import TIME_SPACINGS
from .refinement import check_denoise

SAMPLING_CONFIG_NAME = "sampling_config.json"


@dataclass(frozen=True)
class SamplingConfig:
    t_start: float | None = None  # SDE time of the AR draw; 0 = plain AR sampling; None = the scheduler's t_max / 2
    num_inference_steps: int = 100  # refinement steps from t_start down to 0
    correct_steps: int = 1  # Langevin corrector steps before each predictor step
    snr: float = 0.16  # the corrector's signal-to-noise ratio (its step size)
    probability_flow: bool = False  # refine with the probability-flow ODE instead of the reverse SDE
    denoise: bool | str = True  # True: last predictor mean; False: last sample; "tweedie": a Tweedie last step
    spacing: str = "uniform"  # the refinement time grid: "uniform" in t, or "log"

    def __post_init__(self):
        t = self.t_start
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                              or t < 0):
            raise ValueError(f"SamplingConfig.t_start must be None or a finite float >= 0, got {t!r}")
        for name, lo in (("num_inference_steps", 1), ("correct_steps", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"SamplingConfig.{name} must be an int >= {lo}, got {v!r}")
            if v < lo:
                raise ValueError(f"SamplingConfig.{name} must be an int >= {lo}, got {v!r}")
        if isinstance(self.snr, bool) or not isinstance(self.snr, (int, float)) or not (
                math.isfinite(self.snr) and self.snr > 0):
            raise ValueError(f"SamplingConfig.snr must be a finite number > 0, got {self.snr!r}")
        if not isinstance(self.probability_flow, bool):
            raise TypeError(f"SamplingConfig.probability_flow must be a bool, got {self.probability_flow!r}")
        check_denoise(self.denoise, "SamplingConfig.denoise")
        if self.spacing not in TIME_SPACINGS:
            raise ValueError(f"SamplingConfig.spacing must be one of {TIME_SPACINGS}, got {self.spacing!r}")

    def replace(self, **changes) -> SamplingConfig:
        """A copy with ``changes`` applied (``None`` values are ignored: they mean "keep")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def save(self, folder: str | Path) -> None:
        hub_utils.write_json(Path(folder) / SAMPLING_CONFIG_NAME, config_to_dict(self))

    @classmethod
    def load(cls, folder: str | Path) -> SamplingConfig:
        """The folder's ``sampling_config.json``, or the defaults where there is none."""
        path = Path(folder) / SAMPLING_CONFIG_NAME
        if not path.is_file():
            return cls()
        return config_from_dict(cls, hub_utils.read_json(path, argname=SAMPLING_CONFIG_NAME),
                                argname=str(path), require_all=True)
