"""Loading and input validation: bad input raises a clear ``ValueError``/``TypeError`` naming the argument, file or
field, before anything large is allocated; nothing is silently coerced or defaulted."""

from __future__ import annotations

import inspect
import json
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

import ncml
from ncml import ARTransformerConfig, ARTransformerModel, NCMLPipeline, NCPNConfig, NCPNModel, Pipeline, SDEScheduler
from ncml.configuration_utils import resolve_class
from ncml.models import autoregressive

TINY_NCPN = dict(sample_size=4, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2, attention_heads=2,
                 dropout=0.0, embedding_dim=8)
TINY_TRANSFORMER = dict(sample_size=4, in_channels=1, num_layers=1, hidden_size=8, num_heads=2, nr_logistic_mix=2,
                        embedding_dim=8)


NCML_VP = ncml.VPSDEScheduler


def tiny_ncpn() -> NCPNModel:
    return NCPNModel(NCPNConfig(**TINY_NCPN)).eval()


def tiny_transformer() -> ARTransformerModel:
    return ARTransformerModel(ARTransformerConfig(**TINY_TRANSFORMER)).eval()


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening") / "pipe"
    NCMLPipeline(tiny_ncpn(), NCML_VP(t_max=0.1)).save_pretrained(folder)
    return folder


@pytest.fixture
def pipeline_copy(saved_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(saved_pipeline, folder)
    return folder


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


# ---- 1. config size limits ------------------------------------------------------------------------------
NCPN_SIZE_FIELDS = ["nr_resnet", "nr_filters", "embedding_dim", "nr_logistic_mix", "sample_size", "num_classes"]
TRANSFORMER_SIZE_FIELDS = ["num_layers", "hidden_size", "mlp_ratio", "embedding_dim", "nr_logistic_mix",
                           "sample_size", "num_classes"]


@pytest.mark.parametrize("value", [10**9, 2**70, 10**300])
@pytest.mark.parametrize("config_class, field", [(NCPNConfig, f) for f in NCPN_SIZE_FIELDS]
                         + [(ARTransformerConfig, f) for f in TRANSFORMER_SIZE_FIELDS])
def test_huge_config_sizes_are_refused_naming_the_field(config_class, field, value):
    overrides = {"num_heads": 1} if field == "hidden_size" else {}
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"{config_class.__name__}\.{field}=.*too large.*NCML_MAX_"):
        config_class(**{field: value}, **overrides)
    assert time.perf_counter() - start < 0.25


def test_huge_config_file_fails_fast_before_allocating(tmp_path):
    NCPNModel(NCPNConfig(**TINY_NCPN)).save_pretrained(tmp_path)
    edit_json(tmp_path / "config.json", nr_resnet=10**9)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"NCPNConfig\.nr_resnet=1000000000 makes the model too large"):
        NCPNModel.from_pretrained(tmp_path)
    assert time.perf_counter() - start < 0.5


def test_size_limits_can_be_raised_or_lowered(monkeypatch):
    huge = dict(nr_resnet=10**6)  # ~1.3e13 parameters
    with pytest.raises(ValueError, match="MAX_PARAMETERS"):
        NCPNConfig(**huge)
    monkeypatch.setenv("NCML_MAX_PARAMETERS", str(10**14))
    monkeypatch.setenv("NCML_MAX_ACTIVATIONS", str(10**20))
    assert NCPNConfig(**huge).nr_resnet == 10**6  # only the config: nothing is allocated
    monkeypatch.delenv("NCML_MAX_PARAMETERS")
    monkeypatch.setattr(autoregressive, "MAX_PARAMETERS", 10**14)
    assert NCPNConfig(**huge).nr_resnet == 10**6
    monkeypatch.setattr(autoregressive, "MAX_PARAMETERS", 1000)
    with pytest.raises(ValueError, match=r"ARTransformerConfig\.\w+=.*limit MAX_PARAMETERS=1000"):
        ARTransformerConfig(**TINY_TRANSFORMER)
    monkeypatch.setattr(autoregressive, "MAX_PARAMETERS", 10**9)
    monkeypatch.setenv("NCML_MAX_ACTIVATIONS", "lots")
    with pytest.raises(ValueError, match="NCML_MAX_ACTIVATIONS must be a positive int"):
        NCPNConfig(**TINY_NCPN)


@pytest.mark.parametrize("config", [NCPNConfig(**TINY_NCPN, num_classes=3),
                                    NCPNConfig(**{**TINY_NCPN, "in_channels": 3, "attention_heads": 0}),
                                    ARTransformerConfig(), ARTransformerConfig(**TINY_TRANSFORMER, num_classes=3)])
def test_parameter_estimate_matches_the_built_model(config):
    model = (NCPNModel if isinstance(config, NCPNConfig) else ARTransformerModel)(config)
    fields = {name: getattr(config, name) for name in inspect.signature(config.size_estimate).parameters}
    parameters, activations = config.size_estimate(**fields)
    actual = sum(v.numel() for v in model.state_dict().values())
    assert parameters == pytest.approx(actual, rel=0.1)
    assert 0 < activations < autoregressive.MAX_ACTIVATIONS


# ---- 2. saved configs must list every field -------------------------------------------------------------
def test_scheduler_file_with_a_missing_field_is_refused(tmp_path):
    NCML_VP(t_max=0.1, beta_max=15.0).save_pretrained(tmp_path)
    edit_json(tmp_path / "scheduler_config.json", beta_max=None)
    with pytest.raises(ValueError, match=r"scheduler_config\.json.*missing field\(s\) \['beta_max'\]"):
        NCML_VP.from_pretrained(tmp_path)


def test_backbone_file_with_a_missing_field_is_refused_also_through_a_pipeline(pipeline_copy):
    edit_json(pipeline_copy / "backbone" / "config.json", embedding_dim=None)
    with pytest.raises(ValueError, match=r"backbone.config\.json.*missing field\(s\) \['embedding_dim'\]"):
        NCMLPipeline.from_pretrained(pipeline_copy)
    with pytest.raises(ValueError, match="embedding_dim"):
        NCPNModel.from_pretrained(pipeline_copy / "backbone")


def test_from_config_of_a_user_dict_keeps_defaults():
    assert NCML_VP.from_config({"t_max": 0.5}).config == NCML_VP(t_max=0.5).config
    assert NCPNModel.from_config(dict(TINY_NCPN, _class_name="NCPNModel")).config.num_classes is None


# ---- 3. config files that are not UTF-8 JSON objects ----------------------------------------------------
@pytest.mark.parametrize("content, match", [
    (b'{"t_max": 0.1, "beta_min": 0.1, "beta_max": 20.0, "_class_name": "VPSDESch\xe9duler"}', "not UTF-8"),
    (b'{"t_max": 0.1,', "not valid JSON"),
    (b'{"t_max": NaN, "beta_min": 0.1, "beta_max": 20.0}', "NaN is not a JSON value"),
    (b'{"t_max": 0.1, "t_max": 0.2, "beta_min": 0.1, "beta_max": 20.0}', r"\['t_max'\] appear more than once"),
    (b'[0.1, 0.1, 20.0]', "must hold a JSON object"),
    (b'{"t_max": 1' + b"0" * 5000 + b"}", "not valid JSON"),
])
def test_bad_config_files_are_refused_naming_the_file(tmp_path, content, match):
    (tmp_path / "scheduler_config.json").write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        NCML_VP.from_pretrained(tmp_path)
    assert str(tmp_path / "scheduler_config.json") in str(info.value)


# ---- 4. weights: wrong dtype, non-finite, missing or damaged files ---------------------------------------
def rewrite_weights(folder, key, change):
    path = folder / "model.safetensors"
    state = load_file(str(path))
    state[key] = change(state[key])
    save_file(state, str(path))


@pytest.mark.parametrize("change, match", [
    (lambda v: v.to(torch.int32), r"dtype torch\.int32, model expects torch\.float32"),
    (lambda v: torch.full_like(v, float("nan")), "NaN"),
    (lambda v: v.index_fill(0, torch.tensor([0]), float("inf")), "inf"),
])
def test_bad_weight_tensors_are_refused_naming_the_tensor(tmp_path, change, match):
    model = tiny_ncpn()
    model.save_pretrained(tmp_path)
    key = "head.linear.bias"
    assert key in model.state_dict()
    rewrite_weights(tmp_path, key, change)
    with pytest.raises(ValueError, match=rf"state_dict\['{key}'\].*{match}|{match}.*state_dict\['{key}'\]"):
        NCPNModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=key):
        model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))


def test_half_precision_weights_still_load(tmp_path):
    model = tiny_ncpn()
    model.save_pretrained(tmp_path)
    rewrite_weights(tmp_path, "head.linear.bias", lambda v: v.half())
    loaded = NCPNModel.from_pretrained(tmp_path)
    assert loaded.head.linear.bias.dtype == torch.float32


def test_deleted_weights_name_the_missing_file(pipeline_copy):
    (pipeline_copy / "backbone" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as info:
        NCMLPipeline.from_pretrained(pipeline_copy)
    message = str(info.value)
    assert str(pipeline_copy / "backbone" / "model.safetensors") in message and "missing" in message
    assert ".bin" not in message


@pytest.mark.parametrize("keep", [0.5, 0.9, 16, 4])
def test_truncated_weights_name_the_file(pipeline_copy, keep):
    path = pipeline_copy / "backbone" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError, match="truncated or corrupt") as info:
        NCMLPipeline.from_pretrained(pipeline_copy)
    assert str(path) in str(info.value)


# ---- 5. the class registry cannot be shadowed by a user class of the same name ---------------------------
class VPSDEScheduler(SDEScheduler):
    """A user's scheduler that happens to share the name of ncml's ``VPSDEScheduler`` (never used to sample)."""


USER_PACKAGE = VPSDEScheduler.__module__.split(".")[0]


def test_a_user_class_named_like_an_ncml_class_does_not_replace_it(saved_pipeline):
    assert VPSDEScheduler is not NCML_VP
    assert resolve_class("ncml", "VPSDEScheduler", SDEScheduler, argname="x") is NCML_VP
    assert resolve_class(USER_PACKAGE, "VPSDEScheduler", SDEScheduler, argname="x") is VPSDEScheduler
    pipe = Pipeline.from_pretrained(saved_pipeline)
    assert type(pipe.scheduler) is NCML_VP and type(pipe) is NCMLPipeline


def test_user_subclasses_still_resolve_by_their_package():
    from custom_sde import CosineVPSDEScheduler

    assert resolve_class("custom_sde", "CosineVPSDEScheduler", SDEScheduler, argname="x") is CosineVPSDEScheduler
    with pytest.raises(ValueError, match="not an ncml class"):
        resolve_class("ncml", "CosineVPSDEScheduler", SDEScheduler, argname="x")
    with pytest.raises(ValueError, match="not an ncml class"):
        resolve_class("ncml", "pretrained", SDEScheduler, argname="x")  # a public function, not a class


# ---- 6. pipeline folders: unknown components, subfolders outside the folder -----------------------------
def test_unknown_component_in_model_index_is_refused(pipeline_copy):
    edit_json(pipeline_copy / "model_index.json", vae=["ncml", "NCPNModel"])
    with pytest.raises(ValueError, match=r"model_index\.json.*unknown component\(s\) \['vae'\]"):
        NCMLPipeline.from_pretrained(pipeline_copy)
    edit_json(pipeline_copy / "model_index.json", vae=None, _comment="metadata keys start with _")
    assert type(NCMLPipeline.from_pretrained(pipeline_copy).scheduler) is NCML_VP


@pytest.mark.parametrize("load, subfolder", [
    (lambda path, sub: NCMLPipeline.from_pretrained(path, subfolder=sub), "../other"),
    (lambda path, sub: NCPNModel.from_pretrained(path, subfolder=sub), "backbone/../../other/backbone"),
    (lambda path, sub: NCML_VP.from_pretrained(path, subfolder=sub), "ABSOLUTE"),
])
def test_subfolder_outside_the_folder_is_refused(tmp_path, saved_pipeline, load, subfolder):
    root, other = tmp_path / "root", tmp_path / "other"
    shutil.copytree(saved_pipeline, root)
    shutil.copytree(saved_pipeline, other)  # a valid folder: only the check can refuse it
    if subfolder == "ABSOLUTE":
        subfolder = str(other / "scheduler")
    with pytest.raises(ValueError, match=r"subfolder=.*outside the folder") as info:
        load(root, subfolder)
    assert str(root) in str(info.value)


def test_subfolders_inside_the_folder_still_load(tmp_path, saved_pipeline):
    root = tmp_path / "root"
    shutil.copytree(saved_pipeline, tmp_path / "root" / "nested")
    assert type(NCMLPipeline.from_pretrained(root, subfolder="nested")) is NCMLPipeline
    assert NCML_VP.from_pretrained(root, subfolder="nested/backbone/../scheduler").config.t_max == 0.1
    assert NCML_VP.from_pretrained(root, subfolder=str(root / "nested" / "scheduler")).config.t_max == 0.1
    with pytest.raises(TypeError, match="subfolder must be a str"):
        NCML_VP.from_pretrained(root, subfolder=3)


# ---- 7. non-finite and absurd model inputs ---------------------------------------------------------------
@pytest.mark.parametrize("make", [tiny_ncpn, tiny_transformer])
@pytest.mark.parametrize("value, t, match", [
    (float("inf"), 0.05, r"x must be finite.*0 NaN and 1 ±inf"),
    (-float("inf"), 0.0, r"x must be finite.*0 NaN and 1 ±inf"),
    (float("nan"), 0.05, r"x must be finite.*1 NaN"),
    (1e30, 0.05, r"x must have \|values\| <= 1e\+06.*1e\+30"),
])
def test_non_finite_or_huge_inputs_are_refused(make, value, t, match):
    model = make()
    x = torch.zeros(2, *model.image_shape)
    x[1, 0, 1, 2] = value
    with pytest.raises(ValueError, match=match):
        model.log_prob(x, t)
    with pytest.raises(ValueError, match=match):
        model.score(x, t)
    known_match = match.replace("x must", "known must")
    with pytest.raises(ValueError, match=known_match):
        model.sample(2, t, known=x, known_mask=torch.ones_like(x), progress=False)


def test_large_but_plausible_noisy_inputs_still_work():
    model = tiny_ncpn()
    x = torch.zeros(2, *model.image_shape)
    x[1, 0, 1, 2] = 1e5
    assert torch.isfinite(model.score(x, 0.05)).all()
