from .scheduling_sde_subvp import SubVPSDEScheduler, SubVPSDESchedulerConfig
from .scheduling_sde_ve import VESDEScheduler, VESDESchedulerConfig
from .scheduling_sde_vp import VPSDEScheduler, VPSDESchedulerConfig
from .scheduling_utils import SDEScheduler, SDESchedulerConfig, SDESchedulerOutput

__all__ = [
    "SDEScheduler", "SDESchedulerConfig", "SDESchedulerOutput",
    "VESDEScheduler", "VESDESchedulerConfig", "VPSDEScheduler", "VPSDESchedulerConfig",
    "SubVPSDEScheduler", "SubVPSDESchedulerConfig",
]
