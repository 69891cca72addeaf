"""rsd-export FP32: graphs match PyTorch at the export shape and other shapes, pass checker/lint,
are described by the manifest, and bad input fails with one line and no partial output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rsd_deploy.errors import AtolError, ConfigError, ShapeError
from rsd_deploy.bundle import manifest as mf
from rsd_deploy.fileio import sha256_file
from rsd_deploy.export.exporter import ExportConfig, decoder_parity_feeds, export_models
from rsd_deploy.export.onnx_export import (DenoiserGraph, DiffusionConstants, build_specs, graph_modules,
                                           torch_inputs)
from rsd_deploy.export.validate import lint
from rsd_deploy.models import Schedule
from tests.export.onnx_tiny_export import accuracy_of, manifest_of, tiny_export


@pytest.fixture(scope="module")
def modules(tiny_rsd, tiny_vq):
    return graph_modules(tiny_rsd, tiny_vq, DiffusionConstants.from_schedule(Schedule.preset("v1")))


# export shape + a non-square shape + batch 2 of the other orientation (latent px, multiple 16)
SHAPES = [(1, 16, 16), (1, 16, 48), (2, 32, 16)]


@pytest.mark.parametrize("graph", ["encoder", "denoiser", "decoder"])
def test_fp32_graph_matches_pytorch_at_three_shapes(export_dir, modules, tiny_rsd, tiny_vq, graph):
    spec = build_specs(tiny_rsd.config)[graph]
    session = ort.InferenceSession(str(export_dir / f"{graph}.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(spec.input_names)
    feeds_fn = decoder_parity_feeds(tiny_vq) if graph == "decoder" else (
        lambda b, h, w, s: spec.dummy_inputs(b, h, w, seed=s))
    for i, shape in enumerate(SHAPES):
        feeds = feeds_fn(*shape, i + 7)
        with torch.no_grad():
            ref = modules[graph](*torch_inputs(spec, feeds)).numpy()
        (got,) = session.run(None, feeds)
        assert got.shape == ref.shape == spec.output_shapes(*shape)[spec.output_names[0]]
        assert float(np.abs(got - ref).max()) <= 1e-4, (graph, shape)


def test_denoiser_graph_folds_timestep_and_input_scaling(tiny_rsd):
    schedule = Schedule.preset("v1")
    graph = DenoiserGraph(tiny_rsd, DiffusionConstants.from_schedule(schedule)).eval()
    gen = torch.Generator().manual_seed(3)
    z_y, eps, lq, noise = (torch.randn(2, c, 16, 32, generator=gen) for c in (3, 3, 3, 1))
    with torch.no_grad():
        z_t = z_y + schedule.prior_std * eps  # the graph takes the prior sample as Backend.denoise gets it
        expected = tiny_rsd(z_t / float(schedule.in_std[14]), torch.tensor([14, 14]), lq, noise)
        torch.testing.assert_close(graph(z_t, lq, noise), expected, atol=1e-5, rtol=0)


def test_graphs_pass_checker_and_polygraphy_lint(export_dir, tiny_rsd):
    specs = build_specs(tiny_rsd.config)
    for graph in ("encoder", "denoiser", "decoder"):
        onnx.checker.check_model(str(export_dir / f"{graph}.onnx"), full_check=True)
    ok, message = lint(export_dir / "denoiser.onnx", specs["denoiser"].input_shapes(1, 16, 16))
    assert ok, message
    # the export lints every file it writes and records it
    recorded = accuracy_of(export_dir)["lint"]
    assert len(recorded) == 9 and all("polygraphy check lint ok" in v for v in recorded.values())


def test_lint_rejects_a_broken_graph(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    node = onnx.helper.make_node("Conv", ["x", "missing_weight"], ["y"])
    model = onnx.helper.make_model(onnx.helper.make_graph([node], "broken", [x], [y]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    path = tmp_path / "broken.onnx"
    onnx.save(model, str(path))
    ok, message = lint(path)
    assert not ok and message


def test_manifest_describes_the_files(export_dir, tiny_rsd):
    manifest = manifest_of(export_dir)
    assert manifest["schema_version"] == "2.0"
    assert [t["role"] for t in manifest["graphs"]["denoiser"]["spec"]["inputs"]] == ["z_t", "lq", "student_noise"]
    assert manifest["model"]["kind"] == "rsd" and manifest["model"]["noise_channels"] == 1
    assert manifest["model"]["unet_checkpoint"]["sha256"] == sha256_file(
        Path(manifest["model"]["unet_checkpoint"]["path"]))
    d = manifest["diffusion"]
    assert (d["steps"], d["timestep"], d["kappa"]) == (15, 14, 2.0)
    assert d["sqrt_eta_T"] == pytest.approx(0.99) and d["prior_std"] == pytest.approx(1.98)
    assert d["input_scale"] == pytest.approx(1 / np.sqrt(4 * 0.99 ** 2 + 1))
    assert manifest["preprocess"]["latent_multiple"] == tiny_rsd.config.input_multiple == 16
    for graph, entry in manifest["graphs"].items():
        assert entry["spec"]["name"] == graph
        assert set(entry["variants"]) == {"fp32", "fp16", "int8"}
        for variant in entry["variants"].values():
            path = export_dir / variant["file"]
            assert sha256_file(path) == variant["sha256"] and path.stat().st_size == variant["bytes"]
            assert variant["opset"] == 17 and "tool" in variant["precision_recipe"]
    # the embedding kit's validator (schema + cross-field checks) accepts it
    mf.validate_manifest(manifest)


def test_cli_prints_accuracy_and_engine_status(export_dir):
    _, code, stdout, _ = tiny_export()
    assert code == 0
    assert "accuracy fp32: SR PSNR" in stdout
    assert "rsd-export --build-engine" in stdout.splitlines()[-1]
    report = accuracy_of(export_dir)
    assert report["end_to_end"]["fp32"]["psnr_db_min"] >= 60.0
    for row in report["fp32_parity"]:
        assert row["max_abs"] <= row["atol"]
    assert (export_dir / "accuracy.md").read_text().startswith("# Accuracy")


def test_bad_profile_shape_is_one_line_error(tiny_rsd, tiny_vq, tmp_path):
    config = ExportConfig(out_dir=tmp_path / "out", unet=tiny_rsd, vq_model=tiny_vq, opt_shape=(1, 20, 20))
    with pytest.raises(ShapeError, match="multiples of 16") as info:
        export_models(config)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file_is_refused(tiny_rsd, tiny_vq, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    with pytest.raises(ConfigError, match="not a folder"):
        export_models(ExportConfig(out_dir=target, unet=tiny_rsd, vq_model=tiny_vq))
    assert target.read_text() == "keep me"


def test_failed_parity_leaves_no_partial_output(tiny_rsd, tiny_vq, tmp_path, monkeypatch):
    import rsd_deploy.export.validate as validate

    def failing(*args, **kwargs):
        raise AtolError("encoder: ONNX Runtime fp32 differs (injected)")

    monkeypatch.setattr(validate, "check_fp32_parity", failing)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"old": true}')
    with pytest.raises(AtolError):
        export_models(ExportConfig(out_dir=out, unet=tiny_rsd, vq_model=tiny_vq, opt_shape=(1, 16, 16)))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # no graphs, no staging folder
    assert json.loads((out / "manifest.json").read_text()) == {"old": True}


def test_cli_usage_errors_are_one_line(capsys):
    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.export import cli

    assert run_command(cli, []) == 2
    assert capsys.readouterr().err.strip().startswith("error: nothing to do")
    assert run_command(cli, ["-o", "x", "--opt-shape", "64x64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --opt-shape") and "\n" not in err


def test_cli_hands_the_export_to_triton_and_verify(export_dir, tmp_path, capsys):
    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.export import _triton, cli
    from rsd_deploy.backends.trt_env import tensorrt_status

    pytest.importorskip("rsd_deploy.export.triton")
    _triton(export_dir, tmp_path / "triton")
    assert (tmp_path / "triton" / "rsd_denoiser" / "config.pbtxt").is_file()
    if tensorrt_status()[0]:
        pytest.skip("TensorRT is installed: --verify would run for real")
    capsys.readouterr()
    assert run_command(cli, ["--verify", str(export_dir)]) == 7
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "TensorRT" in err and "\n" not in err
    assert run_command(cli, ["--build-engine", str(export_dir)]) == 7
    assert "rsd-export --build-engine" in capsys.readouterr().err


def test_without_real_images_fp32_export_reports_on_synthetic_images(tiny_rsd, tiny_vq, tmp_path, monkeypatch):
    from rsd_deploy.export import calib

    monkeypatch.setattr(calib, "default_calibration_dirs", lambda: [])
    monkeypatch.setattr(calib, "default_hr_calibration_dir", lambda: None)  # INT8 calibrates on hr_photos now
    with pytest.raises(ConfigError, match="--calib"):
        export_models(ExportConfig(out_dir=tmp_path / "int8", unet=tiny_rsd, vq_model=tiny_vq, int8=True,
                                   opt_shape=(1, 16, 16)))
    assert calib.synthetic_crops(16, 2)[0].shape == (1, 3, 16, 16)


def test_export_goes_on_to_build_engines_when_tensorrt_is_present(export_dir, tmp_path, monkeypatch, capsys):
    """`rsd-export --fp16 -o DIR` = ONNX + verification + engines in one go where TensorRT and a GPU exist
    (engine_build is replaced by recording stand-ins here: this checks the hand-off, not TensorRT)."""
    import shutil
    from types import SimpleNamespace

    from rsd_deploy.cli.common import run_command
    from rsd_deploy.cli.export import cli
    from rsd_deploy.export import engine_build, exporter

    out = tmp_path / "bundle"
    shutil.copytree(export_dir, out)
    result = SimpleNamespace(manifest_path=out / "manifest.json", kind="rsd",
                             files={"denoiser": {"fp32": "", "fp16": "", "int8": ""}},
                             accuracy=SimpleNamespace(summary_lines=lambda: []), failed_precisions=lambda: [])
    calls = []
    monkeypatch.setattr(exporter, "export_models", lambda config: result)
    monkeypatch.setattr(engine_build, "tensorrt_status", lambda: (True, "TensorRT 10.13, NVIDIA H100"))
    monkeypatch.setattr(engine_build, "build_engines",
                        lambda folder, precisions, options: calls.append((Path(folder), tuple(precisions))) or [])
    assert run_command(cli, ["-o", str(out), "--fp16", "-q"]) == 0
    assert calls == [(out, ("fp32", "fp16", "int8"))]
    capsys.readouterr()
    assert run_command(cli, ["-o", str(out), "--fp16", "-q", "--no-engines"]) == 0
    assert len(calls) == 1 and "--no-engines" in capsys.readouterr().out
