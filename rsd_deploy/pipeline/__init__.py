"""End-to-end x4 super-resolution: image files in, SR images out, over any backend.

Library entry points: ``SRPipeline`` (arrays / decoded images through one backend),
``upscale_files`` (files and folders, what ``rsd-upscale`` runs) and ``resolve_backend`` (the one
place a model source becomes a backend).
"""
from rsd_deploy.pipeline.batch import BatchReport, UpscaleConfig, upscale_files
from rsd_deploy.pipeline.image_io import LRImage, read_image, write_image_atomic
from rsd_deploy.pipeline.loading import ModelSource, resolve_backend
from rsd_deploy.pipeline.noise import SamplingNoise, draw_region_noise, draw_tiles_noise
from rsd_deploy.pipeline.sr_pipeline import SRPipeline
from rsd_deploy.pipeline.tiling import FeatherBlender, TilePlan
from rsd_deploy.types import ModelInfo, ModelKind, TileConfig

__all__ = [
    "BatchReport", "UpscaleConfig", "upscale_files", "LRImage", "read_image", "write_image_atomic",
    "ModelSource", "resolve_backend", "SamplingNoise", "draw_region_noise", "draw_tiles_noise",
    "ModelInfo", "ModelKind", "SRPipeline", "TileConfig", "FeatherBlender", "TilePlan",
]
