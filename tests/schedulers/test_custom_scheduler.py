"""The extension point: a user-defined SDE (README, "Defining a new SDE") passes the same mixin."""

from custom_sde import CosineVPSDEScheduler
from scheduler_tests import SchedulerTesterMixin


class TestCosineVPSDEScheduler(SchedulerTesterMixin):
    scheduler_class = CosineVPSDEScheduler


def test_user_scheduler_round_trips_by_class_name(tmp_path):
    from ncml.configuration_utils import resolve_class
    from ncml.schedulers import SDEScheduler

    s = CosineVPSDEScheduler(s=0.01)
    s.save_pretrained(tmp_path)
    cls = resolve_class("custom_sde", "CosineVPSDEScheduler", SDEScheduler, argname="scheduler")
    assert cls.from_pretrained(tmp_path).config == s.config
