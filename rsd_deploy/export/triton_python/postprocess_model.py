"""Triton Python backend: RSD post-processing (decoder output -> SR uint8 image).

Per request: SR (3, sf*hp, sf*wp) float32 and orig_size (H, W) -> crop to (sf*H, sf*W), clamp to
[-1, 1], uint8 = rint((x * 0.5 + 0.5) * 255), HWC RGB (as rsd_deploy.pipeline.image_io.SRCanvas).
Parameters (config.pbtxt): sf.
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


def postprocess(sr_chw: np.ndarray, orig_size: np.ndarray, sf: int) -> np.ndarray:
    """(3, sf*hp, sf*wp) float32 -> (sf*H, sf*W, 3) uint8."""
    sr = pixels.crop(sr_chw, int(orig_size[0]), int(orig_size[1]), sf)
    return np.ascontiguousarray(pixels.quantize(sr, 255, np.uint8).transpose(1, 2, 0))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.sf = int(config["parameters"]["sf"]["string_value"])

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                srs = pb_utils.get_input_tensor_by_name(request, "SR").as_numpy()
                sizes = pb_utils.get_input_tensor_by_name(request, "ORIG_SIZE").as_numpy()
                images = np.stack([postprocess(sr, size, self.sf) for sr, size in zip(srs, sizes)])
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SR_IMAGE", images)]))
            except Exception as e:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses
