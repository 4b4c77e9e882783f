"""A backbone is checked against the scheduler it was saved with: another SDE class or horizon ``t_max`` raises a
clear ``ValueError`` unless ``allow_scheduler_mismatch=True``. Also: an unresolvable class name in
``model_index.json`` says where it was looked for and what to import, and a component class defined in
``__main__`` gets a warning at save time."""

from __future__ import annotations

import json

import pytest
from gaussian_backbone import GaussianBackbone

from ncml import (NCMLInpaintPipeline, NCMLPipeline, Pipeline, SDEScheduler, SubVPSDEScheduler, VESDEScheduler,
                  VPSDEScheduler)
from ncml.configuration_utils import _REGISTRY


def make_pipeline(scheduler) -> NCMLPipeline:
    return NCMLPipeline(GaussianBackbone.for_scheduler(scheduler), scheduler)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mismatch") / "vp"
    make_pipeline(VPSDEScheduler(t_max=0.1)).save_pretrained(folder)
    return folder


MISMATCHES = {"another class": VESDEScheduler(t_max=0.1), "a subclass": SubVPSDEScheduler(t_max=0.1),
              "another t_max": VPSDEScheduler(t_max=0.2)}


# ---- from_pretrained ------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", MISMATCHES)
@pytest.mark.parametrize("pipeline_class", [NCMLPipeline, NCMLInpaintPipeline, Pipeline])
def test_loading_with_another_scheduler_raises_naming_both(saved, case, pipeline_class):
    scheduler = MISMATCHES[case]
    with pytest.raises(ValueError, match="scheduler mismatch") as info:
        pipeline_class.from_pretrained(saved, scheduler=scheduler)
    message = str(info.value)
    assert "VPSDEScheduler (from 'ncml', t_max=0.1)" in message  # what the folder was saved with
    assert f"{type(scheduler).__name__} (from 'ncml', t_max={scheduler.t_max:g})" in message  # what was passed
    assert str(saved) in message and "allow_scheduler_mismatch=True" in message


@pytest.mark.parametrize("case", MISMATCHES)
def test_allow_scheduler_mismatch_opts_out(saved, case):
    scheduler = MISMATCHES[case]
    pipe = NCMLPipeline.from_pretrained(saved, scheduler=scheduler, allow_scheduler_mismatch=True)
    assert pipe.scheduler is scheduler
    pipe.scheduler = VESDEScheduler(t_max=0.7)  # the opt-out holds for this pipeline's later swaps too
    assert pipe.scheduler.t_max == 0.7


def test_the_same_sde_and_horizon_is_accepted(saved):
    pipe = NCMLPipeline.from_pretrained(saved, scheduler=VPSDEScheduler(t_max=0.1, beta_max=10.0))
    assert pipe.scheduler.config.beta_max == 10.0  # class and t_max are what is checked
    assert type(NCMLPipeline.from_pretrained(saved).scheduler) is VPSDEScheduler  # no replacement: no check


def test_allow_scheduler_mismatch_must_be_a_bool(saved):
    with pytest.raises(TypeError, match="allow_scheduler_mismatch must be a bool"):
        NCMLPipeline.from_pretrained(saved, scheduler=VESDEScheduler(), allow_scheduler_mismatch="yes")
    with pytest.raises(TypeError, match="allow_scheduler_mismatch must be a bool"):
        NCMLPipeline(GaussianBackbone.for_scheduler(VPSDEScheduler()), VPSDEScheduler(), allow_scheduler_mismatch=1)


# ---- pipelines built from a loaded backbone ------------------------------------------------------------
def test_a_loaded_backbone_remembers_its_scheduler(saved):
    backbone = NCMLPipeline.from_pretrained(saved).backbone
    with pytest.raises(ValueError, match=r"scheduler mismatch.*VPSDEScheduler.*t_max=0\.1.*VESDEScheduler"):
        NCMLPipeline(backbone, VESDEScheduler(t_max=0.1))
    with pytest.raises(ValueError, match="scheduler mismatch"):
        NCMLInpaintPipeline(backbone, VPSDEScheduler(t_max=0.3))
    assert NCMLPipeline(backbone, VPSDEScheduler(t_max=0.1)).scheduler.t_max == 0.1
    pipe = NCMLPipeline(backbone, VESDEScheduler(), allow_scheduler_mismatch=True)
    assert isinstance(pipe.scheduler, VESDEScheduler)


def test_swapping_the_scheduler_of_a_loaded_pipeline_is_checked(saved):
    pipe = NCMLPipeline.from_pretrained(saved)
    original = pipe.scheduler
    with pytest.raises(ValueError, match="scheduler mismatch"):
        pipe.scheduler = VESDEScheduler()
    assert pipe.scheduler is original  # unchanged
    pipe.scheduler = VPSDEScheduler(t_max=0.1, beta_min=0.2)
    assert pipe.scheduler.config.beta_min == 0.2


def test_a_replacement_backbone_is_checked_against_the_folders_scheduler(saved, tmp_path):
    ve = tmp_path / "ve"
    make_pipeline(VESDEScheduler(t_max=0.1)).save_pretrained(ve)
    vp_backbone = NCMLPipeline.from_pretrained(saved).backbone
    with pytest.raises(ValueError, match=r"scheduler mismatch.*VPSDEScheduler.*VESDEScheduler"):
        NCMLPipeline.from_pretrained(ve, backbone=vp_backbone)
    pipe = NCMLPipeline.from_pretrained(ve, backbone=vp_backbone, allow_scheduler_mismatch=True)
    assert pipe.backbone is vp_backbone and isinstance(pipe.scheduler, VESDEScheduler)


def test_pipelines_built_in_memory_are_not_checked():
    backbone = GaussianBackbone.for_scheduler(VPSDEScheduler())  # no record of a saved scheduler
    pipe = NCMLPipeline(backbone, VESDEScheduler())
    pipe.scheduler = SubVPSDEScheduler()
    assert isinstance(pipe.scheduler, SubVPSDEScheduler)


def test_a_user_sde_is_checked_by_its_package_and_name(tmp_path):
    from custom_sde import CosineVPSDEScheduler

    folder = tmp_path / "cosine"
    make_pipeline(CosineVPSDEScheduler(t_max=0.5)).save_pretrained(folder)
    with pytest.raises(ValueError, match=r"CosineVPSDEScheduler \(from 'custom_sde', t_max=0.5\).*VPSDEScheduler"):
        NCMLPipeline.from_pretrained(folder, scheduler=VPSDEScheduler(t_max=0.5))
    assert NCMLPipeline.from_pretrained(folder, scheduler=CosineVPSDEScheduler(t_max=0.5, s=0.01)).scheduler.t_max \
        == 0.5


# ---- class names that cannot be resolved ---------------------------------------------------------------
def edit_index(folder, **changes):
    path = folder / "model_index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_an_unknown_class_names_its_package_and_says_to_import_it(saved, tmp_path):
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(saved, folder)
    edit_index(folder, scheduler=["my_sdes", "WiggleSDEScheduler"])
    with pytest.raises(ValueError) as info:
        NCMLPipeline.from_pretrained(folder)
    message = str(info.value)
    assert "model_index.json['scheduler']" in message and "'WiggleSDEScheduler'" in message
    assert "package 'my_sdes'" in message and "import the package defining the class first" in message
    assert "`import my_sdes`" in message

    edit_index(folder, scheduler=["ncml", "WiggleSDEScheduler"])
    with pytest.raises(ValueError, match=r"ncml's public classes .* have no 'WiggleSDEScheduler'"):
        NCMLPipeline.from_pretrained(folder)


# ---- classes defined in __main__ ------------------------------------------------------------------------
def test_a_scheduler_class_defined_in_main_warns_at_save(tmp_path, monkeypatch):
    main_vp = type("MainVPSDEScheduler", (VPSDEScheduler,), {"__module__": "__main__"})  # as a script defines it
    assert _REGISTRY[("__main__", "MainVPSDEScheduler")] is main_vp
    folder = tmp_path / "main"
    with pytest.warns(UserWarning, match=r"scheduler is a MainVPSDEScheduler defined in __main__.*"
                                         r"\['__main__', 'MainVPSDEScheduler'\].*importable package"):
        NCMLPipeline(GaussianBackbone.for_scheduler(VPSDEScheduler(t_max=0.1)), main_vp(t_max=0.1)).save_pretrained(
            folder)
    assert type(NCMLPipeline.from_pretrained(folder).scheduler) is main_vp  # loads where __main__ defines it

    monkeypatch.delitem(_REGISTRY, ("__main__", "MainVPSDEScheduler"))  # another process: not defined there
    with pytest.raises(ValueError, match=r"no class 'MainVPSDEScheduler' defined in __main__.*Define or import"):
        NCMLPipeline.from_pretrained(folder)
    # replacing the scheduler needs no class lookup; the saved one's class and t_max are still compared
    with pytest.raises(ValueError, match=r"MainVPSDEScheduler \(from '__main__', t_max=0.1\)"):
        NCMLPipeline.from_pretrained(folder, scheduler=VPSDEScheduler(t_max=0.1))


def test_classes_in_importable_modules_do_not_warn(tmp_path, recwarn):
    make_pipeline(VPSDEScheduler()).save_pretrained(tmp_path / "plain")
    assert not [w for w in recwarn if "__main__" in str(w.message)]
    assert issubclass(VPSDEScheduler, SDEScheduler)
