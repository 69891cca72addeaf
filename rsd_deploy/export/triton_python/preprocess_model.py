"""Triton Python backend: RSD pre-processing (LR uint8 image -> the graphs' inputs).

Per request image (H, W, 3) uint8 RGB and a seed:
  lq          = pad((x / 255 - 0.5) / 0.5) to the latent multiple (reflect per axis, replicate when
                the pad is not smaller than the side), CHW float32 in [-1, 1]
  image       = PyTorch-equivalent bicubic x sf of lq (a = -0.75, align_corners=False, no antialias)
  prior_noise = N(0, 1) (3, hp, wp);  noise = N(0, 1) (noise_channels, hp, wp) for RSD students
  orig_size   = (H, W) int32, for the post-processing crop
Noise comes from numpy's default_rng(seed) (prior first, then the noise map): reproducible per seed,
not the same numbers as the rsd-deploy Python pipeline's position-keyed noise.
Parameters (config.pbtxt): latent_multiple, sf, cubic_a, noise_channels.
"""
import json

import numpy as np

def to_model_range(rgb_u8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 (x / 255 - 0.5) / 0.5, as rsd_deploy.pipeline.image_io."""
    unit = rgb_u8.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(((unit - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1))


def pad_to_multiple(chw: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom/right of (C, H, W) to multiples; reflect per axis where pad < side, else replicate."""
    _, h, w = chw.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_w:
        chw = np.pad(chw, ((0, 0), (0, 0), (0, pad_w)), mode="reflect" if pad_w < w else "edge")
    if pad_h:
        chw = np.pad(chw, ((0, 0), (0, pad_h), (0, 0)), mode="reflect" if pad_h < h else "edge")
    return chw


def _cubic_matrix(in_size: int, factor: int, a: float) -> np.ndarray:
    """(in*factor, in) float32 interpolation matrix of PyTorch's bicubic upsampling along one axis."""
    out_size = in_size * factor
    dst = np.arange(out_size, dtype=np.float32)
    real = np.float32(1.0 / factor) * (dst + np.float32(0.5)) - np.float32(0.5)  # no clamp for cubic
    i0 = np.floor(real)
    t = (real - i0).astype(np.float32)
    a32 = np.float32(a)

    def near(x):  # |x| <= 1
        return ((a32 + 2) * x - (a32 + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a32 * x - 5 * a32) * x + 8 * a32) * x - 4 * a32

    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1).astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    for k in range(4):
        idx = np.clip(i0.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(matrix, (np.arange(out_size), idx), weights[:, k])
    return matrix


def bicubic_upsample(chw: np.ndarray, factor: int, a: float = -0.75) -> np.ndarray:
    """(C, H, W) float32 -> (C, H*factor, W*factor), PyTorch bicubic (align_corners=False, no clamp)."""
    _, h, w = chw.shape
    my, mx = _cubic_matrix(h, factor, a), _cubic_matrix(w, factor, a)
    return np.ascontiguousarray(np.einsum("oh,chw,pw->cop", my, chw.astype(np.float32), mx, optimize=True),
                                dtype=np.float32)


def preprocess(rgb_u8: np.ndarray, seed: int, *, latent_multiple: int, sf: int, cubic_a: float,
               noise_channels: int) -> dict:
    """One image -> {lq, image, prior_noise, noise?, orig_size} (no batch axis)."""
    if rgb_u8.ndim != 3 or rgb_u8.shape[2] != 3 or rgb_u8.dtype != np.uint8:
        raise ValueError(f"LR_IMAGE must be (H, W, 3) uint8 RGB; got {rgb_u8.shape} {rgb_u8.dtype}")
    lq = pad_to_multiple(to_model_range(rgb_u8), latent_multiple)
    rng = np.random.default_rng(int(seed))
    out = {
        "lq": lq,
        "image": bicubic_upsample(lq, sf, cubic_a),
        "prior_noise": rng.standard_normal((3,) + lq.shape[1:], dtype=np.float32),
        "orig_size": np.array(rgb_u8.shape[:2], np.int32),
    }
    if noise_channels:
        out["noise"] = rng.standard_normal((noise_channels,) + lq.shape[1:], dtype=np.float32)
    return out


class TritonPythonModel:
    """Triton entry point; outputs are named like the config's outputs (lowercase keys above)."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.options = {"latent_multiple": int(params["latent_multiple"]), "sf": int(params["sf"]),
                        "cubic_a": float(params["cubic_a"]), "noise_channels": int(params["noise_channels"])}
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                images = pb_utils.get_input_tensor_by_name(request, "LR_IMAGE").as_numpy()
                seeds = pb_utils.get_input_tensor_by_name(request, "SEED").as_numpy().reshape(-1)
                items = [preprocess(img, seed, **self.options) for img, seed in zip(images, seeds)]
                outputs = [pb_utils.Tensor(name, np.stack([item[name.lower()] for item in items]))
                           for name in self.output_names]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as e:  # report per request, keep serving
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses
