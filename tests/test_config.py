"""TrainConfig: a strict from_dict (unknown keys are errors, old keys migrate) and validate()."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deepsim_cli.config import TrainConfig
from deepsim_cli.errors import UsageError


def test_round_trip_through_json_is_exact():
    cfg = TrainConfig(layer="fc6", data=("a.tar", "b/"), crop_scale=(0.5, 1.0), fc_dims=(512, 256), time_limit=60.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_unknown_key_is_an_error_naming_it_unless_not_strict():
    d = {**TrainConfig().to_dict(), "lrr": 1e-3}
    with pytest.raises(UsageError, match=r"run/config.json: unknown training option 'lrr' \(did you mean 'lr'\?\)"):
        TrainConfig.from_dict(d, what="run/config.json")
    assert TrainConfig.from_dict(d, strict=False) == TrainConfig()


def test_old_keys_migrate_by_name():
    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "precision"}
    assert TrainConfig.from_dict({**old, "amp": False}).precision == "fp32"


@pytest.mark.parametrize("field,value,words", [
    ("lr", 0.0, "> 0"), ("lr", float("nan"), "finite"), ("w_adv", -1.0, ">= 0"),
    ("batch", 0, "integer >= 1"), ("steps", 2.5, "integer"), ("upsample", "bilinear", "deconv, resize"),
    ("loss", "everything", "img+adv"), ("precision", "fp16", "auto, bf16, fp32"), ("model", "gan", "inverter"),
    ("crop_scale", (0.8, 0.5), "min <= max"), ("comparator", "alexnet", "ENCODER:LAYER"),
    ("beta2", 1.0, "[0, 1)"), ("fc_dims", (), "positive integers"), ("time_limit", -5.0, ">= 0"),
    ("load_size", 32, "smaller than image_size"), ("feature_cache", "yes", "true or false"),
])
def test_validate_names_the_bad_option(field, value, words):
    cfg = dataclasses.replace(TrainConfig(), **{field: value})
    with pytest.raises(UsageError) as e:
        cfg.validate("cfg")
    msg = str(e.value)
    assert msg.startswith(f"cfg: {field} = ") and words in msg and "\n" not in msg
    with pytest.raises(UsageError):  # from_dict checks too
        TrainConfig.from_dict({**TrainConfig().to_dict(), field: list(value) if isinstance(value, tuple) else value})


def test_defaults_and_the_shipped_recipes_validate():
    TrainConfig().validate()
    TrainConfig(model="vae", layer="fc6", loss="img", upsample="resize", g_width=0.5, comparator_size=128).validate()


def test_train_resume_with_a_hand_edited_config_is_one_line(cli, error_line, in_tmp):
    run = in_tmp / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({**TrainConfig(data=("x",)).to_dict(), "stepz": 5}))
    before = (run / "config.json").read_bytes()
    r = cli("train", "--out", str(run), "--resume")
    assert r.exit_code == 2 and "unknown training option 'stepz'" in error_line(r)
    assert (run / "config.json").read_bytes() == before  # a refused command changes nothing
