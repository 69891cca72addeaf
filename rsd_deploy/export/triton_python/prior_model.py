"""Triton Python backend: the prior sample of the one-step denoiser (between encoder and denoiser).

Per request: Z_Y (3, h, w) float32 (the encoder's latent) and PRIOR_NOISE (3, h, w) N(0, 1) ->
Z_T = Z_Y + prior_std * PRIOR_NOISE, the unscaled z_T the denoiser graph takes (manifest
diffusion.prior_std = kappa * sqrt(eta_T); the graph applies the input scaling itself).
Parameters (config.pbtxt): prior_std.
"""
import json

import numpy as np


def prior_sample(z_y: np.ndarray, prior_noise: np.ndarray, prior_std: float) -> np.ndarray:
    """z_T = z_y + prior_std * eps, float32 (as the Python pipeline's sampler and the C++ runner)."""
    if z_y.shape != prior_noise.shape:
        raise ValueError(f"Z_Y {z_y.shape} and PRIOR_NOISE {prior_noise.shape} must have one shape")
    return (z_y.astype(np.float32) + np.float32(prior_std) * prior_noise.astype(np.float32)).astype(np.float32)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.prior_std = float(config["parameters"]["prior_std"]["string_value"])

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                z_y = pb_utils.get_input_tensor_by_name(request, "Z_Y").as_numpy()
                eps = pb_utils.get_input_tensor_by_name(request, "PRIOR_NOISE").as_numpy()
                z_t = prior_sample(z_y, eps, self.prior_std)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("Z_T", z_t)]))
            except Exception as e:  # report per request, keep serving
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses
