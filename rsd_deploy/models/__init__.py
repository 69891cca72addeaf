"""Networks (no file I/O here): Swin-UNet, VQ-f4 autoencoder, schedule and the one sampler."""
from rsd_deploy.models.sampler import (SamplingNoise, prior_sample, sample, sample_onestep, sample_resshift,
                                       unet_denoiser)
from rsd_deploy.models.schedule import Schedule
from rsd_deploy.models.unet import UNetSwin
from rsd_deploy.models.vq import VQAutoencoder

__all__ = ["UNetSwin", "VQAutoencoder", "Schedule", "SamplingNoise", "sample", "unet_denoiser",
           "sample_resshift", "sample_onestep", "prior_sample"]
