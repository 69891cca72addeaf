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
import os
import sys

import numpy as np

try:  # inside the rsd-deploy package (tests, tools)
    from rsd_deploy import pixels
except ImportError:  # a Triton model repository: rsd-export --triton writes the verbatim copy beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import pixels

def preprocess(rgb_u8: np.ndarray, seed: int, *, latent_multiple: int, sf: int, cubic_a: float,
               noise_channels: int) -> dict:
    """One image -> {lq, image, prior_noise, noise?, orig_size} (no batch axis)."""
    if rgb_u8.ndim != 3 or rgb_u8.shape[2] != 3 or rgb_u8.dtype != np.uint8:
        raise ValueError(f"LR_IMAGE must be (H, W, 3) uint8 RGB; got {rgb_u8.shape} {rgb_u8.dtype}")
    lq = pixels.pad_to_multiple(np.ascontiguousarray(pixels.to_model_range(rgb_u8).transpose(2, 0, 1)),
                                latent_multiple)
    rng = np.random.default_rng(int(seed))
    out = {
        "lq": lq,
        "image": pixels.bicubic_upsample(lq, sf, cubic_a),
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
