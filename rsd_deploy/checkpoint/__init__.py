"""Checkpoint reading, key mapping and detection (see loader.load_checkpoint)."""
from rsd_deploy.checkpoint.io import read_checkpoint_file, sha256_file
from rsd_deploy.checkpoint.loader import load_checkpoint, save_safetensors, state_dict_to_model, to_official_state_dict

__all__ = ["load_checkpoint", "save_safetensors", "state_dict_to_model", "to_official_state_dict",
           "read_checkpoint_file", "sha256_file"]
