"""rsd-deploy: RSD (one-step distilled ResShift x4 super-resolution) from PyTorch to ONNX and TensorRT."""
from rsd_deploy.checkpoint import load_checkpoint, save_safetensors
from rsd_deploy.config import UNetConfig, VQConfig
from rsd_deploy.models import Schedule, UNetSwin, VQAutoencoder, sample_onestep, sample_resshift

__version__ = "0.1.0"

__all__ = ["load_checkpoint", "save_safetensors", "UNetConfig", "VQConfig", "UNetSwin", "VQAutoencoder", "Schedule",
           "sample_resshift", "sample_onestep", "__version__"]
