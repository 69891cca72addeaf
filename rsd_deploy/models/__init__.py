"""Networks (no file I/O here): Swin-UNet, VQ-f4 autoencoder, schedule and samplers."""
from rsd_deploy.models.sampler import prior_sample, sample_onestep, sample_resshift
from rsd_deploy.models.schedule import Schedule
from rsd_deploy.models.unet import UNetSwin
from rsd_deploy.models.vq import VQAutoencoder

__all__ = ["UNetSwin", "VQAutoencoder", "Schedule", "sample_resshift", "sample_onestep", "prior_sample"]
