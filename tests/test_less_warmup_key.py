"""A reused LESS warmup must come from the same precision and device kind as the run that reuses it."""

from __future__ import annotations

import pytest

from skillweave.trainers.less import load_base, warmup_key
from skillweave.trainers.less_config import LessConfig
from tests.test_less_pipeline import LESS_ARGS, _cli, files  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(dtype: str):
    model, _ = load_base("tiny", ["a b c d"], seed=0, device="cpu", dtype=dtype)
    return model


def test_warmup_key_includes_the_resolved_dtype():
    config, encoded = LessConfig(pool="p", targets="t"), [{"input_ids": [1, 2], "labels": [1, 2]}]
    fp32, bf16, fp16 = (warmup_key(config, encoded, _model(d)) for d in ("fp32", "bf16", "fp16"))
    assert len({fp32, bf16, fp16}) == 3
    # fp32 on the CPU keeps the key warmups had before --dtype/--device existed (they stay reusable)
    assert fp32 == warmup_key(config, encoded)
    # the resolved dtype counts, not the option's spelling: a bf16 model gives the bf16 key however it was asked
    assert warmup_key(config, encoded, _model("bf16")) == bf16


def test_warmup_key_includes_the_device_kind():
    config, encoded = LessConfig(pool="p", targets="t"), [{"input_ids": [1, 2], "labels": [1, 2]}]
    on_cpu = _model("bf16")
    meta = _model("bf16").to("meta")  # stands in for another device kind (no GPU needed)
    assert next(meta.parameters()).device.type == "meta"
    assert warmup_key(config, encoded, on_cpu) != warmup_key(config, encoded, meta)


def test_a_bf16_run_refuses_an_fp32_warmup(files, capsys):  # noqa: F811
    args = ["--db", files["db"], "select", "less", "--pool", files["pool"], "--targets", files["targets"],
            "--out", files["out"], *LESS_ARGS, "--device", "cpu", "--json"]
    code, _, err = _cli(capsys, *args, "--dtype", "fp32")
    assert code == 0, err
    code, out, err = _cli(capsys, *args, "--dtype", "bf16")
    assert code == 2 and out == "", out
    assert err.startswith("Error: ") and "different warmup settings" in err and err.count("\n") == 1, err
