"""Graph I/O specs: roles are the contract, names only address the graph."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rsd_deploy.bundle.specs import ROLES, ExportSpec, Role, graph_specs
from rsd_deploy.errors import ShapeError


def test_every_role_is_used_and_each_graph_names_its_tensors_once():
    specs = graph_specs(16, noise_channels=1)
    used = [t.role for s in specs.values() for t in s.inputs + s.outputs]
    assert set(used) == set(ROLES)
    for s in specs.values():
        names = [t.name for t in s.inputs + s.outputs]
        assert len(set(names)) == len(names), s.name
    # the seam: the one-step denoiser takes the prior sample, not z_y and eps
    assert [t.role for t in specs["denoiser"].inputs] == [Role.Z_T, Role.LQ, Role.STUDENT_NOISE]
    assert [t.role for t in graph_specs(16, 0)["denoiser"].inputs] == [Role.Z_T, Role.LQ]


def test_feeds_map_roles_to_names_in_input_order():
    den = graph_specs(16, noise_channels=1)["denoiser"]
    z, lq, n = np.zeros(1), np.ones(1), np.full(1, 2.0)
    feeds = den.feeds({Role.STUDENT_NOISE: n, Role.LQ: lq, Role.Z_T: z})
    assert list(feeds) == list(den.input_names) and feeds[den.name_of(Role.Z_T)] is z
    with pytest.raises(ShapeError, match="missing student_noise"):
        den.feeds({Role.Z_T: z, Role.LQ: lq, Role.STUDENT_NOISE: None})
    sinsr = graph_specs(16, noise_channels=0)["denoiser"]
    assert list(sinsr.feeds({Role.Z_T: z, Role.LQ: lq, Role.STUDENT_NOISE: None})) == list(sinsr.input_names)
    with pytest.raises(ShapeError, match="got student_noise it does not take"):
        sinsr.feeds({Role.Z_T: z, Role.LQ: lq, Role.STUDENT_NOISE: n})
    with pytest.raises(ShapeError, match="no tensor with role 'sr_image'"):
        den.by_role(Role.SR_IMAGE)


def test_specs_survive_the_manifest_round_trip():
    for spec in graph_specs(16, noise_channels=1).values():
        again = ExportSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert again == spec
