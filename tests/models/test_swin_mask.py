"""The official, non-standard shifted-window mask, for any H and W."""
import pytest
import torch

from rsd_deploy.models.swin import MASK_VALUE, official_shifted_window_mask, official_window_mask_pattern, \
    relative_position_index
from tests.conftest import FIXTURES


def test_pattern_masks_left_against_right_columns():
    p = official_window_mask_pattern(8, 4)
    cols = torch.arange(64) % 8
    left = cols < 4
    expected = torch.where(left[:, None] ^ left[None, :], MASK_VALUE, 0.0)
    assert torch.equal(p, expected)
    assert (p == MASK_VALUE).sum() == 2 * 32 * 32  # rows and columns don't matter, only window columns


@pytest.mark.parametrize("h,w", [(16, 16), (16, 32), (32, 48), (64, 64), (24, 8)])
def test_only_bottom_row_of_windows_is_masked(h, w):
    m = official_shifted_window_mask(h, w, 8, 4)
    n_h, n_w = h // 8, w // 8
    assert m.shape == (n_h * n_w, 64, 64)
    masked = (m != 0).flatten(1).any(1)
    assert masked.tolist() == [i >= (n_h - 1) * n_w for i in range(n_h * n_w)]
    # unlike standard Swin, the right-most window column above the bottom row is not masked
    assert not masked[n_w - 1]


def test_matches_the_buffer_stored_in_an_official_checkpoint():
    path = FIXTURES / "unet_tiny" / "state_dict.pth"
    if not path.is_file():
        pytest.skip("fixture absent")
    state = torch.load(path, weights_only=True)
    stored = state["input_blocks.1.1.blocks.1.attn_mask"]  # 16 x 16 construction size, window 8, shift 4
    assert torch.equal(official_shifted_window_mask(16, 16, 8, 4), stored)
    assert torch.equal(relative_position_index(8), state["input_blocks.1.1.blocks.0.attn.relative_position_index"])
    assert torch.equal(relative_position_index(4), state["middle_block.1.blocks.0.attn.relative_position_index"])


def test_shift_only_where_construction_resolution_exceeds_window(tiny_unet):
    from rsd_deploy.config import UNetConfig
    from rsd_deploy.models import UNetSwin

    def shifts(model):
        return {name: (m.window, m.shift) for name, m in model.named_modules() if hasattr(m, "shift")}

    tiny = shifts(tiny_unet)
    assert tiny["input_blocks.1.1.blocks.1"] == (8, 4)
    assert tiny["input_blocks.3.1.blocks.1"] == (8, 0)  # resolution 8 == window
    assert tiny["middle_block.1.blocks.1"] == (4, 0)  # window clipped to 4
    with torch.device("meta"):
        full = shifts(UNetSwin(UNetConfig.full()))
    shifted = sorted(k for k, (_, s) in full.items() if s)
    assert shifted == sorted(f"{p}.1.blocks.1" for p in ("input_blocks.1", "input_blocks.4", "input_blocks.7",
                                                         "output_blocks.3", "output_blocks.6", "output_blocks.9"))
    assert len(full) == 18
