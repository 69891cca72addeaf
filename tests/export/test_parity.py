"""The one parity report (rsd_deploy.export.parity) and the per-precision tolerance table, on arithmetic chains
whose errors are known exactly, plus the typed errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rsd_deploy import metrics
from rsd_deploy.cli.export import EXIT_HELP
from rsd_deploy.errors import AtolError, ConfigError, OutputMatchError, ShapeError
from rsd_deploy.export.parity import (ParityInput, draw_inputs, graph_chain, parity_report, reference_runs)
from rsd_deploy.bundle.specs import TOLERANCES, Role, decoder_spec, denoiser_spec, encoder_spec, tolerance, tolerance_summary
from rsd_deploy.models import Schedule

SCHEDULE = Schedule.preset("v1")


def _specs(noise_channels=1):
    return {"encoder": encoder_spec(16), "denoiser": denoiser_spec(16, noise_channels), "decoder": decoder_spec(16)}


def _chain(specs, decoder_offset=0.0, out_name=None):
    """encoder: 4x4 average pool; denoiser: 0.5 z + 0.1 lq (+ noise); decoder: nearest x4 (+ offset)."""
    def encoder(feeds):
        (x,) = feeds.values()
        b, c, h, w = x.shape
        return x.reshape(b, c, h // 4, 4, w // 4, 4).mean((3, 5))

    def denoiser(feeds):
        spec = specs["denoiser"]
        out = 0.5 * feeds[spec.name_of(Role.Z_T)] + 0.1 * feeds[spec.name_of(Role.LQ)]
        return out + 0.01 * feeds[spec.name_of(Role.STUDENT_NOISE)].mean(1, keepdims=True)

    def decoder(feeds):
        (x,) = feeds.values()
        out = x.repeat(4, axis=2).repeat(4, axis=3) + decoder_offset
        return {out_name or specs["decoder"].output_names[0]: out}

    return graph_chain(specs, {"encoder": encoder, "denoiser": denoiser, "decoder": decoder})


def _inputs(count=2):
    rng = np.random.default_rng(0)
    crops = [rng.uniform(-0.8, 0.8, (1, 3, 16, 16)).astype(np.float32) for _ in range(count)]
    return draw_inputs(crops, 1, seed=3)


def test_identical_chains_pass_with_zero_error():
    specs = _specs()
    report = parity_report(_chain(specs), {"fp32": _chain(specs)}, _inputs(), SCHEDULE)
    assert report.passed and report.precisions == ["fp32"] and report.latent_shape == (1, 16, 16)
    assert all(g.max_abs == 0.0 and math.isinf(g.psnr_db) for g in report.graphs)
    e2e = report.end_to_end_of("fp32")
    assert math.isinf(e2e.min_psnr_db) and e2e.mean_psnr_db == 200.0
    d = report.to_dict()
    assert d["end_to_end"]["fp32"]["psnr_db_min"] is None and d["passed"] is True  # JSON has no inf
    assert d["tolerances"]["fp32"]["reason"]


def test_known_decoder_error_is_measured_and_fails_its_floor():
    specs = _specs()
    offset = 0.05  # decoder output + 0.05: 6.4 grey levels before rounding, about 32 dB < fp16's 40
    inputs = _inputs()
    runs = reference_runs(_chain(specs), inputs, SCHEDULE)
    report = parity_report(None, {"fp16": _chain(specs, decoder_offset=offset)}, inputs, SCHEDULE, runs=runs)
    by = {g.graph: g for g in report.graphs}
    assert by["encoder"].max_abs == 0.0 and by["denoiser"].max_abs == 0.0
    assert by["decoder"].max_abs == pytest.approx(offset, abs=1e-6)
    assert by["decoder"].mean_abs == pytest.approx(offset, abs=1e-6) and not by["decoder"].passed  # > 1e-2
    want = [metrics.psnr(metrics.to_uint8(r.sr), metrics.to_uint8(r.sr + offset)) for r in runs]
    e2e = report.end_to_end_of("fp16")
    assert e2e.min_psnr_db == pytest.approx(min(want)) and 25 < e2e.min_psnr_db < 40
    assert e2e.threshold_db == TOLERANCES["fp16"].min_psnr_db
    assert not e2e.passed and report.failed_precisions() == ["fp16"]
    with pytest.raises(AtolError) as info:
        report.raise_for_failures("fp16 check")
    message = str(info.value)
    assert "decoder.fp16 mean |err|" in message and "fp16 end-to-end" in message and "\n" not in message


def test_per_graph_mean_atol_is_held_only_when_checked():
    specs = _specs()
    report = parity_report(_chain(specs), {"int8": _chain(specs, decoder_offset=0.3)}, _inputs(1), SCHEDULE)
    (dec,) = [g for g in report.graphs if g.graph == "decoder"]
    assert dec.mean_abs > TOLERANCES["int8"].mean_atol and not dec.passed
    assert any("decoder.int8 mean |err|" in f for f in report.failures())
    loose = parity_report(_chain(specs), {"int8": _chain(specs, decoder_offset=0.3)}, _inputs(1), SCHEDULE,
                          check_graphs=False)
    assert all(g.passed for g in loose.graphs) and not loose.passed  # the end-to-end floor still applies


def test_typed_errors_for_wrong_outputs():
    specs = _specs()
    with pytest.raises(OutputMatchError, match="outputs \\['sr'\\]"):
        parity_report(_chain(specs), {"fp32": _chain(specs, out_name="sr")}, _inputs(1), SCHEDULE)
    other = _specs(noise_channels=1)
    shrink = graph_chain(other, {**_chain(other).fns, "encoder": lambda f: np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(ShapeError, match="encoder.fp32: the candidate output has shape"):
        parity_report(_chain(specs), {"fp32": shrink}, _inputs(1), SCHEDULE)


def test_host_prior_is_the_schedule_prior():
    specs = _specs()
    (item,) = _inputs(1)
    (run,) = reference_runs(_chain(specs), [item], SCHEDULE)
    np.testing.assert_allclose(run.z_t, SCHEDULE.prior(run.z_y, item.prior_noise), rtol=0, atol=1e-7)
    assert isinstance(item, ParityInput) and item.student_noise.shape == (1, 1, 16, 16)


def test_one_tolerance_table_with_reasons_feeds_the_cli_help():
    assert set(TOLERANCES) == {"fp32", "fp16", "bf16", "int8"}
    floors = [TOLERANCES[p].min_psnr_db for p in ("fp32", "fp16", "bf16", "int8")]
    assert floors == sorted(floors, reverse=True)  # less precision, lower floor
    for t in TOLERANCES.values():
        assert len(t.reason) > 40 and t.mean_atol > 0
    assert tolerance_summary(("fp16", "int8")) in " ".join(EXIT_HELP.split())
    with pytest.raises(ConfigError, match="unknown precision 'fp64'"):
        tolerance("fp64")
