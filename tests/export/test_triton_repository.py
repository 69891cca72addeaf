"""The Triton model repository: configs checked against Triton's own model_config.proto, the
ensemble wiring, the Python-backend pre/post-processing against PyTorch and the Python pipeline,
and the client example, all on the CPU (no server)."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

try:
    from . import embedkit_helpers as kit
except ImportError:  # pragma: no cover - depends on pytest's import mode
    import embedkit_helpers as kit

from rsd_deploy.errors import ConfigError, ManifestError
from rsd_deploy.export.triton import TritonOptions, to_pbtxt, write_model_repository
from rsd_deploy.export.triton_python import postprocess_model, preprocess_model, prior_model
from rsd_deploy.pipeline.image_io import pad_to_multiple, read_image, to_model_range

pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")
from google.protobuf import text_format  # noqa: E402

REALSET = kit.REPO / ".." / "shared" / "data" / "realset65"
GRAPHS = ("rsd_encoder", "rsd_denoiser", "rsd_decoder")


def parse(path: Path):
    return text_format.Parse(path.read_text(), pb2.ModelConfig())


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    kit.write_synthetic_bundle(root, multiple=16, noise_channels=1)
    return root


@pytest.fixture(scope="module")
def repo(bundle, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("triton") / "models"
    write_model_repository(bundle, root)
    return root


def test_configs_parse_with_tritons_schema(repo, bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    configs = {p.parent.name: parse(p) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == {"rsd", "rsd_preprocess", "rsd_prior", "rsd_postprocess", *GRAPHS}
    for folder, c in configs.items():
        assert c.name == folder and c.max_batch_size == 4  # the profile's max batch
    for name in GRAPHS:
        c = configs[name]
        spec = manifest["graphs"][name.split("_")[1]]["spec"]
        assert c.platform == "onnxruntime_onnx"
        # batch axis implicit (max_batch_size > 0): dims are (C, -1, -1)
        assert [(i.name, list(i.dims), i.data_type) for i in c.input] == \
            [(t["name"], [t["channels"], -1, -1], pb2.TYPE_FP32) for t in spec["inputs"]]
        assert [(o.name, list(o.dims)) for o in c.output] == [(t["name"], [t["channels"], -1, -1])
                                                              for t in spec["outputs"]]
        assert list(c.dynamic_batching.preferred_batch_size) == [2, 4]
        assert c.dynamic_batching.max_queue_delay_microseconds == 100
        assert [(g.count, g.kind) for g in c.instance_group] == [(1, pb2.ModelInstanceGroup.KIND_GPU)]
    for name in ("rsd_preprocess", "rsd_prior", "rsd_postprocess"):
        assert configs[name].backend == "python"
        assert configs[name].instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert configs["rsd_preprocess"].parameters["latent_multiple"].string_value == "16"
    assert float(configs["rsd_prior"].parameters["prior_std"].string_value) == manifest["diffusion"]["prior_std"]
    assert configs["rsd"].platform == "ensemble"


def test_ensemble_wiring_is_consistent(repo):
    configs = {p.parent.name: parse(p) for p in repo.glob("*/config.pbtxt")}
    ensemble = configs["rsd"]
    available = {i.name: (i.data_type, list(i.dims)) for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs = {i.name: (i.data_type, list(i.dims)) for i in model.input}
        outputs = {o.name: (o.data_type, list(o.dims)) for o in model.output}
        assert set(step.input_map) == set(inputs), step.model_name  # every model input is fed
        for key, tensor in step.input_map.items():
            assert tensor in available, f"{step.model_name}.{key} reads {tensor} before it is produced"
            assert available[tensor][0] == inputs[key][0], f"dtype mismatch at {step.model_name}.{key}"
        for key, tensor in step.output_map.items():
            assert key in outputs
            available[tensor] = outputs[key]
    for out in ensemble.output:
        assert available[out.name][0] == out.data_type


def test_model_files_are_the_bundle_graphs(repo, bundle):
    import onnx

    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in GRAPHS:
        sub = name.split("_")[1]
        model_file = repo / name / "1" / "model.onnx"
        assert hashlib.sha256(model_file.read_bytes()).hexdigest() == \
            manifest["graphs"][sub]["variants"]["fp32"]["sha256"]
        graph = onnx.load(str(model_file)).graph
        config = parse(repo / name / "config.pbtxt")
        assert [i.name for i in graph.input] == [i.name for i in config.input]
    assert (repo / "rsd" / "1").is_dir()  # ensembles need a version folder
    assert (repo / "rsd_preprocess" / "1" / "model.py").is_file()


def test_preprocess_bicubic_and_padding_match_the_pipeline():
    rgb = np.random.default_rng(0).integers(0, 256, size=(21, 13, 3), dtype=np.uint8)
    out = preprocess_model.preprocess(rgb, 5, latent_multiple=16, sf=4, cubic_a=-0.75, noise_channels=1)
    lq_ref = pad_to_multiple(torch.from_numpy(to_model_range(rgb)).permute(2, 0, 1)[None], 16)
    np.testing.assert_array_equal(out["lq"], lq_ref[0].numpy())
    up_ref = F.interpolate(lq_ref, scale_factor=4, mode="bicubic", align_corners=False)[0].numpy()
    np.testing.assert_allclose(out["image"], up_ref, rtol=0, atol=3e-6)
    assert out["prior_noise"].shape == (3, 32, 16) and out["noise"].shape == (1, 32, 16)
    assert list(out["orig_size"]) == [21, 13]
    again = preprocess_model.preprocess(rgb, 5, latent_multiple=16, sf=4, cubic_a=-0.75, noise_channels=1)
    np.testing.assert_array_equal(again["prior_noise"], out["prior_noise"])


def test_prior_model_forms_the_pipelines_prior_sample():
    from rsd_deploy.models import Schedule

    g = torch.Generator().manual_seed(4)
    z_y, eps = torch.randn(3, 16, 24, generator=g), torch.randn(3, 16, 24, generator=g)
    schedule = Schedule.preset("v1")
    ours = prior_model.prior_sample(z_y.numpy(), eps.numpy(), schedule.prior_std)
    np.testing.assert_allclose(ours, (z_y + schedule.prior_std * eps).numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        prior_model.prior_sample(z_y.numpy(), eps.numpy()[:, :8], 1.0)


def test_ensemble_binds_the_graphs_by_role(repo, bundle):
    """The ensemble feeds each denoiser input the tensor of its role, under the name the manifest gives."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    config = parse(repo / "rsd" / "config.pbtxt")
    den = {s.model_name: s for s in config.ensemble_scheduling.step}["rsd_denoiser"]
    names = {t["role"]: t["name"] for t in manifest["graphs"]["denoiser"]["spec"]["inputs"]}
    assert dict(den.input_map) == {names["z_t"]: "z_t", names["lq"]: "lq", names["student_noise"]: "student_noise"}


def test_ensemble_on_renamed_graphs_gives_the_same_image(simulator, tmp_path):
    renamed = tmp_path / "renamed"
    kit.write_synthetic_bundle(renamed, multiple=16, noise_channels=1, io_prefix="t_")
    write_model_repository(renamed, tmp_path / "repo")
    other = kit.TritonCpuSimulator(tmp_path / "repo")
    images = np.random.default_rng(5).integers(0, 256, size=(1, 20, 28, 3), dtype=np.uint8)
    feeds = {"LR_IMAGE": images, "SEED": np.array([[3]], np.int64)}
    np.testing.assert_array_equal(other.infer("rsd", feeds)["SR_IMAGE"], simulator.infer("rsd", feeds)["SR_IMAGE"])


def test_postprocess_matches_the_pipeline_canvas():
    from rsd_deploy.pipeline.image_io import LRImage, SRCanvas

    sr = np.random.default_rng(1).uniform(-1.3, 1.3, size=(3, 64, 48)).astype(np.float32)
    ours = postprocess_model.postprocess(sr, np.array([13, 11], np.int32), 4)
    canvas = SRCanvas(LRImage(Path("x.png"), np.zeros((13, 11, 3), np.uint8), None, False), 4)
    canvas.write_rows(0, sr[:, :52, :44].transpose(1, 2, 0))
    np.testing.assert_array_equal(ours, canvas.pixels[:, :, ::-1])  # canvas is BGR


@pytest.fixture(scope="module")
def simulator(repo):
    sim = kit.TritonCpuSimulator(repo)
    yield sim
    sys.modules.pop("triton_python_backend_utils", None)


def test_ensemble_on_a_real_image_matches_the_python_pipeline(simulator, bundle):
    path = REALSET / "00003.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from rsd_deploy.pipeline.noise import SamplingNoise

    rgb = read_image(path).rgb[40:90, 60:97]  # 50x37: padded to 64x48
    trace: dict = {}
    out = simulator.infer("rsd", {"LR_IMAGE": rgb[None], "SEED": np.array([[11]], np.int64)}, trace)
    sr = out["SR_IMAGE"][0]
    assert sr.shape == (200, 148, 3) and sr.dtype == np.uint8
    # the pipeline with the noise the pre-processing drew
    pipe = kit.python_pipeline(bundle, tile=None, overlap=0, seed=0)
    lq = pad_to_multiple(torch.from_numpy(to_model_range(rgb)).permute(2, 0, 1)[None], 16)
    noise = SamplingNoise(prior=torch.from_numpy(trace["prior_eps"]), student=torch.from_numpy(trace["student_noise"]))
    ref = pipe.sample(lq, noise)[0, :, :200, :148].numpy()
    ref_u8 = np.rint((np.clip(ref, -1, 1) * 0.5 + 0.5) * 255).astype(np.int16).transpose(1, 2, 0)
    assert np.abs(sr.astype(np.int16) - ref_u8).max() <= 1
    assert sr.std() > 10


def test_ensemble_with_the_real_tiny_model_matches_the_python_pipeline(tmp_path):
    path = REALSET / "00003.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    from rsd_deploy.pipeline.noise import SamplingNoise

    torch.set_num_threads(1)
    bundle = kit.tiny_export_dir()
    write_model_repository(bundle, tmp_path / "repo")
    sim = kit.TritonCpuSimulator(tmp_path / "repo")
    rgb = read_image(path).rgb[96:156, 240:284]
    trace: dict = {}
    sr = sim.infer("rsd", {"LR_IMAGE": rgb[None], "SEED": np.array([[3]], np.int64)}, trace)["SR_IMAGE"][0]
    pipe = kit.python_pipeline(bundle, tile=None, overlap=0, seed=0)
    lq = pad_to_multiple(torch.from_numpy(to_model_range(rgb)).permute(2, 0, 1)[None], 16)
    noise = SamplingNoise(prior=torch.from_numpy(trace["prior_eps"]), student=torch.from_numpy(trace["student_noise"]))
    ref = pipe.sample(lq, noise)[0, :, :240, :176].numpy()
    ref_u8 = np.rint((np.clip(ref, -1, 1) * 0.5 + 0.5) * 255).astype(np.int16).transpose(1, 2, 0)
    diff = np.abs(sr.astype(np.int16) - ref_u8)
    print("triton-sim vs pipeline, real tiny model: max u8 diff", diff.max(), "mean", diff.mean())
    assert diff.max() <= 1 and sr.std() > 10


def test_ensemble_batches_requests(simulator):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    seeds = np.array([[1], [2], [1]], np.int64)
    out = simulator.infer("rsd", {"LR_IMAGE": images, "SEED": seeds})["SR_IMAGE"]
    assert out.shape == (3, 64, 64, 3)
    single = simulator.infer("rsd", {"LR_IMAGE": images[2:3], "SEED": seeds[2:3]})["SR_IMAGE"]
    assert np.abs(out[2].astype(int) - single[0].astype(int)).max() <= 1


def test_client_example_tiles_through_the_ensemble(simulator):
    sys.path.insert(0, str(kit.REPO / "export" / "triton"))
    try:
        import client
    finally:
        sys.path.pop(0)
    import tritonclient.grpc as grpcclient  # [grpc] is what the tests install; http builds inputs the same way

    rgb = np.random.default_rng(3).integers(0, 256, size=(40, 52, 3), dtype=np.uint8)
    inputs = client.make_inputs(rgb, 9, grpcclient)
    assert [(i.name(), i.shape(), i.datatype()) for i in inputs] == [("LR_IMAGE", [1, 40, 52, 3], "UINT8"),
                                                                     ("SEED", [1, 1], "INT64")]

    calls = {}

    def infer(feeds):
        out = simulator.infer("rsd", {"LR_IMAGE": feeds["LR_IMAGE"][None], "SEED": np.array([[feeds["SEED"]]])})
        calls[int(feeds["SEED"])] = (feeds["LR_IMAGE"].shape, out["SR_IMAGE"][0])
        return {"SR_IMAGE": out["SR_IMAGE"][0]}

    whole = client.upscale(rgb, infer, seed=4)
    assert whole.shape == (160, 208, 3) and calls.pop(4)[0] == (40, 52, 3)
    tiled = client.upscale(rgb, infer, seed=100, tile=32, overlap=8, workers=2)
    assert tiled.shape == (160, 208, 3)
    # plan: ys (0, 8), xs (0, 20); tile seeds 100 + raster index
    assert sorted(calls) == [100, 101, 102, 103] and {c[0] for c in calls.values()} == {(32, 32, 3)}
    tiles = {seed: sr.astype(int) for seed, (_, sr) in calls.items()}
    t = tiled.astype(int)
    # where only one tile covers the image, the output is that tile's output
    np.testing.assert_array_equal(t[:32, :80], tiles[100][:32, :80])
    np.testing.assert_array_equal(t[128:, 128:], tiles[103][96:, 48:])
    # in the overlap of the two top tiles, a convex blend (+-1 for rounding)
    lo = np.minimum(tiles[100][:32, 80:128], tiles[101][:32, :48])
    hi = np.maximum(tiles[100][:32, 80:128], tiles[101][:32, :48])
    band = t[:32, 80:128]
    assert (band >= lo - 1).all() and (band <= hi + 1).all()
    assert (band != tiles[100][:32, 80:128]).any() and (band != tiles[101][:32, :48]).any()


def test_plans_are_used_when_the_bundle_has_engines(bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["engines"] = {}
    for g in ("encoder", "denoiser", "decoder"):
        plan = copy / f"{g}.fp32.plan"
        plan.write_bytes(f"plan {g}".encode())
        manifest["engines"][g] = {"fp32": {"file": plan.name, "sha256": hashlib.sha256(plan.read_bytes()).hexdigest(),
                                           "cache_key": {"trt": "10.13"}, "built_utc": "2026-11-26T05:00:00Z"}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    repo = write_model_repository(copy, tmp_path / "repo", max_batch_size=2, instance_count=2)
    assert repo.platform == "tensorrt_plan"
    c = parse(tmp_path / "repo" / "rsd_denoiser" / "config.pbtxt")
    assert c.platform == "tensorrt_plan" and c.max_batch_size == 2 and c.instance_group[0].count == 2
    assert (tmp_path / "repo" / "rsd_denoiser" / "1" / "model.plan").read_bytes() == b"plan denoiser"
    with pytest.raises(ConfigError, match="exceeds the engines' profile max batch"):
        write_model_repository(copy, tmp_path / "repo2", max_batch_size=8)
    onnx_repo = write_model_repository(copy, tmp_path / "repo3", platform="onnxruntime_onnx")
    assert onnx_repo.platform == "onnxruntime_onnx"


def test_bad_requests_are_refused_without_touching_existing_files(bundle, tmp_path):
    with pytest.raises(ManifestError, match="no fp16 graph"):
        write_model_repository(bundle, tmp_path / "a", precision="fp16")
    with pytest.raises(ManifestError, match="no fp32 TensorRT engines"):
        write_model_repository(bundle, tmp_path / "b", platform="tensorrt_plan")
    with pytest.raises(ConfigError, match="instance kind"):
        write_model_repository(bundle, tmp_path / "c", instance_kind="GPU")
    with pytest.raises(ConfigError, match="preferred batch sizes"):
        write_model_repository(bundle, tmp_path / "d", preferred_batch_sizes=(8,))
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "other_model").mkdir()
    with pytest.raises(ConfigError, match="is not empty"):
        write_model_repository(bundle, occupied)
    assert [p.name for p in occupied.iterdir()] == ["other_model"]
    # overwrite replaces only our models and keeps the others
    write_model_repository(bundle, occupied, TritonOptions(overwrite=True))
    write_model_repository(bundle, occupied, TritonOptions(overwrite=True, max_queue_delay_us=500))
    assert parse(occupied / "rsd_encoder" / "config.pbtxt").dynamic_batching.max_queue_delay_microseconds == 500
    assert sorted(p.name for p in occupied.iterdir() if not p.name.startswith(".")) == sorted(
        ["other_model", "rsd", "rsd_preprocess", "rsd_prior", "rsd_postprocess", *GRAPHS])
    assert not [p for p in occupied.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_pbtxt_writer_escapes_and_nests():
    from rsd_deploy.export.triton import Enum

    text = to_pbtxt({"name": 'a"b', "max_batch_size": 2, "input": [{"name": "x", "data_type": Enum("TYPE_FP32"),
                                                                      "dims": [3, -1]}],
                     "parameters": [{"key": "k", "value": {"string_value": "v\\w"}}]})
    c = text_format.Parse(text, pb2.ModelConfig())
    assert c.name == 'a"b' and list(c.input[0].dims) == [3, -1] and c.parameters["k"].string_value == "v\\w"


def test_python_models_run_from_the_repository_without_rsd_deploy(repo):
    """Triton's Python may have neither torch nor rsd_deploy: each Python model folder holds a verbatim
    copy of rsd_deploy/pixels.py, and model.py imports it when the package is absent."""
    import subprocess

    import rsd_deploy.pixels

    source = Path(rsd_deploy.pixels.__file__).read_bytes()
    for name in ("rsd_preprocess", "rsd_postprocess"):
        assert (repo / name / "1" / "pixels.py").read_bytes() == source
    rgb = np.random.default_rng(4).integers(0, 256, size=(21, 13, 3), dtype=np.uint8)
    want = preprocess_model.preprocess(rgb, 7, latent_multiple=16, sf=4, cubic_a=-0.75, noise_channels=1)
    script = (
        "import importlib.util, sys, numpy as np\n"
        "sys.modules['rsd_deploy'] = None  # as in a Triton image without the package\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(repo / 'rsd_preprocess' / '1' / 'model.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert m.pixels.__file__.endswith('rsd_preprocess/1/pixels.py'), m.pixels.__file__\n"
        "rgb = np.random.default_rng(4).integers(0, 256, size=(21, 13, 3), dtype=np.uint8)\n"
        "out = m.preprocess(rgb, 7, latent_multiple=16, sf=4, cubic_a=-0.75, noise_channels=1)\n"
        "np.savez(sys.argv[1], **out)\n")
    out_file = repo.parent / "pre.npz"
    proc = subprocess.run([sys.executable, "-c", script, str(out_file)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out_file)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value)
