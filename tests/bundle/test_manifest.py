"""The bundle manifest: the JSON Schema itself, the loader's checks, and the writer/schema agreement."""
from __future__ import annotations

import copy
import json

import pytest

from tests.export import embedkit_helpers as kit

from rsd_deploy.errors import ManifestError
from rsd_deploy.bundle import manifest as bd


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    manifest = kit.write_synthetic_bundle(root, multiple=16, noise_channels=1)
    return root, manifest


def test_schema_is_valid_draft_2020_12_and_versioned():
    jsonschema = pytest.importorskip("jsonschema")
    schema = bd.manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("/draft/2020-12/schema")
    assert "/2.0/" in schema["$id"]
    assert schema["properties"]["schema_version"]["pattern"] == "^2\\.[0-9]+$"
    # the roles the runtimes bind by are the spec's roles
    from rsd_deploy.bundle.specs import ROLES

    assert schema["$defs"]["tensorSpec"]["properties"]["role"]["enum"] == list(ROLES)
    # everything the C++ runner and the Triton generator read is required
    assert set(schema["required"]) >= {"schema_version", "model", "diffusion", "preprocess", "postprocess",
                                       "tiling", "graphs"}


def test_synthetic_bundle_loads(synthetic):
    root, manifest = synthetic
    loaded = bd.load_manifest(root, verify_sha256=True)
    assert loaded == manifest
    b = bd.Bundle.open(root)
    assert b.noise_channels == 1 and b.latent_multiple == 16
    assert b.graph_file("denoiser") == root / "denoiser.onnx"
    assert b.spec("denoiser").input_names == ("z_t", "lq", "noise")
    assert [t.role for t in b.spec("denoiser").inputs] == ["z_t", "lq", "student_noise"]
    assert b.engine_file("denoiser") is None
    with pytest.raises(ManifestError, match="no fp16 graph for encoder"):
        b.graph_file("encoder", "fp16")


def test_writer_output_matches_the_schema(synthetic, tmp_path):
    """build_manifest (the writer) produces what the schema describes, and write_manifest refuses
    to write an invalid one."""
    mf = bd
    from rsd_deploy.export.onnx_export import DiffusionConstants
    from rsd_deploy.models import Schedule

    root, manifest = synthetic
    written = mf.build_manifest(kind="rsd", demo=True, noise_channels=1, unet_checkpoint=None, vq_checkpoint=None,
                                constants=DiffusionConstants.from_schedule(Schedule.preset("v1")),
                                latent_multiple=16, graphs=manifest["graphs"], tile=64, overlap=16)
    bd.validate_manifest(json.loads(json.dumps(written)))
    written["diffusion"]["timestep"] = 3
    with pytest.raises(ManifestError, match="timestep"):
        bd.write_manifest(tmp_path, written)
    assert not (tmp_path / "manifest.json").exists()


def _mutated(manifest: dict, edit) -> dict:
    m = copy.deepcopy(manifest)
    edit(m)
    return m


def _set(path, value):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _delete(path):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


BAD = [
    ("missing section", _delete(["diffusion"]), "diffusion"),
    ("unknown model kind", _set(["model", "kind"], "esrgan"), "$.model.kind"),
    ("noise channels 2", _set(["model", "noise_channels"], 2), "$.model.noise_channels"),
    ("short sha", _set(["graphs", "encoder", "variants", "fp32", "sha256"], "abc"), "sha256"),
    ("absolute file", _set(["graphs", "encoder", "variants", "fp32", "file"], "/etc/passwd"), "file"),
    ("parent file", _set(["graphs", "decoder", "variants", "fp32", "file"], "../decoder.onnx"), "file"),
    ("unknown precision", _set(["graphs", "encoder", "variants", "fp8"],
                               {"file": "e.onnx", "sha256": "0" * 64, "bytes": 1, "opset": 17}), "variants"),
    ("unknown submodel", _set(["graphs", "upsampler"], {}), "graphs"),
    ("bad timestamp", _set(["created_utc"], "yesterday"), "created_utc"),
    ("old major version 1", _set(["schema_version"], "1.0"), "schema_version '1.0' is not supported"),
    ("unknown role", _set(["graphs", "denoiser", "spec", "inputs", 0, "role"], "z_y"), "role"),
    ("swapped roles", _set(["graphs", "denoiser", "spec", "inputs", 0, "role"], "lq"), "graphs.denoiser I/O"),
    ("two tensors, one name", _set(["graphs", "denoiser", "spec", "inputs", 0, "name"], "lq"), "names two tensors"),
    ("input scale", _set(["diffusion", "input_scale"], 0.5), "input_scale"),
    ("prior std", _set(["diffusion", "prior_std"], 2.5), "prior_std"),
    ("timestep", _set(["diffusion", "timestep"], 3), "timestep"),
    ("overlap >= tile", _set(["tiling", "overlap"], 64), "overlap"),
    ("no noise input", _set(["model", "noise_channels"], 0), "graphs.denoiser I/O"),
    ("multiple mismatch", _set(["preprocess", "latent_multiple"], 24), "latent_multiple"),
    ("spec name", _set(["graphs", "encoder", "spec", "name"], "decoder"), "spec.name"),
]


@pytest.mark.parametrize("label,edit,needle", BAD, ids=[b[0] for b in BAD])
def test_invalid_manifests_are_rejected_with_one_line(synthetic, label, edit, needle):
    pytest.importorskip("jsonschema")
    _, manifest = synthetic
    with pytest.raises(ManifestError) as info:
        bd.validate_manifest(_mutated(manifest, edit), where="m.json")
    message = str(info.value)
    assert "\n" not in message and message.startswith("m.json: ") and needle in message, message


def test_newer_minor_versions_and_unknown_keys_are_accepted(synthetic):
    _, manifest = synthetic
    m = _mutated(manifest, _set(["schema_version"], "2.7"))
    m["future_section"] = {"anything": 1}
    m["model"]["future_field"] = "x"
    bd.validate_manifest(m)


def test_missing_and_changed_files_are_reported(synthetic, tmp_path):
    root, manifest = synthetic
    for name in ("encoder.onnx", "denoiser.onnx", "decoder.onnx", "manifest.json"):
        (tmp_path / name).write_bytes((root / name).read_bytes())
    bd.load_manifest(tmp_path, verify_sha256=True)
    (tmp_path / "decoder.onnx").write_bytes((root / "decoder.onnx").read_bytes() + b"\0")
    bd.load_manifest(tmp_path)  # hashes are opt-in (full-size graphs are large)
    with pytest.raises(ManifestError, match="does not match its sha256"):
        bd.load_manifest(tmp_path, verify_sha256=True)
    (tmp_path / "decoder.onnx").unlink()
    with pytest.raises(ManifestError, match="'decoder.onnx', which is missing"):
        bd.load_manifest(tmp_path)
    bd.load_manifest(tmp_path, check_files=False)


def test_unreadable_manifests(tmp_path):
    with pytest.raises(ManifestError, match="no manifest found"):
        bd.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{\"schema_version\": ")
    with pytest.raises(ManifestError, match="not readable JSON"):
        bd.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="JSON object"):
        bd.load_manifest(tmp_path)
