"""method vq: k-means codebook, latent standardisation, EMA codebook with dead-code restarts, a short run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rsd_deploy.config import VQConfig
from rsd_deploy.models.vq import VQAutoencoder
import torch.nn.functional as F

from rsd_deploy.train.autoencoder import (BOX_DECODER_TAPS, BOX_ENCODER_TAPS, DECODER_TAPS, ENCODER_TAPS, gradient_l1,
                                         init_as_pooling, kmeans, linear_start, standardise_latent)

SMALL_VQ = {"ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "n_embed": 64, "norm_groups": 8}


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    points = torch.cat([c + 0.05 * torch.randn(500, 3, generator=g) for c in centres])
    codes = kmeans(points, 4, iters=10, generator=torch.Generator().manual_seed(1))
    # every true centre has a code within the cluster spread
    nearest = torch.cdist(centres, codes).min(1).values
    assert nearest.max() < 0.1


def test_kmeans_refuses_fewer_vectors_than_codes():
    from rsd_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="kmeans_batches"):
        kmeans(torch.zeros(10, 3), 64, iters=1, generator=torch.Generator())


def test_standardised_latent_keeps_the_autoencoder_function():
    torch.manual_seed(0)
    model = VQAutoencoder(VQConfig(**{**SMALL_VQ, "ch_mult": (1, 1, 2)})).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z_before = model.encode(x)
        rec_before = model.decode(z_before, quantize=False)
        z_std = standardise_latent(model, z_before)
        z_after = model.encode(x)
        rec_after = model.decode(z_after, quantize=False)
    assert torch.allclose(z_after, z_std, atol=1e-5)
    assert z_after.mean((0, 2, 3)).abs().max() < 1e-4
    assert (z_after.std((0, 2, 3)) - 1).abs().max() < 1e-3
    assert torch.allclose(rec_after, rec_before, atol=1e-4)


@pytest.mark.parametrize("spec, fitted", [
    ({"ch": 16, "ch_mult": (1, 2), "norm_groups": 4}, True),  # f2: no fitted taps, so the box start
    ({"ch": 32, "ch_mult": (1, 2, 4), "norm_groups": 8, "num_res_blocks": 2}, False),
    ({"ch": 32, "ch_mult": (1, 2, 4), "norm_groups": 8, "num_res_blocks": 2}, True),
])
def test_pooling_init_starts_as_the_linear_down_and_upsampler(spec, fitted):
    torch.manual_seed(0)
    model = VQAutoencoder(VQConfig(**{**SMALL_VQ, **spec}))
    init_as_pooling(model, fitted=fitted)
    f = model.config.downsample_factor
    stages = len(spec["ch_mult"]) - 1
    if fitted and stages == len(ENCODER_TAPS):
        enc_taps, dec_taps = ENCODER_TAPS, DECODER_TAPS
    else:
        enc_taps, dec_taps = [BOX_ENCODER_TAPS] * stages, [BOX_DECODER_TAPS] * stages
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    flat = torch.tensor([30.0, 160.0, 40.0]).view(1, 3, 1, 1).expand(1, 3, 64, 64) / 127.5 - 1  # the colour a
    # randomly initialised VQ turned to (58, 51, 0)
    with torch.no_grad():
        z = model.encode(x)
        rec = model.decode(z, quantize=False)
        flat_rec = model.decode(model.encode(flat), quantize=False)
    z_ref, rec_ref = linear_start(x, enc_taps, dec_taps)
    assert (z - z_ref).abs().max() < 0.03
    assert (rec - rec_ref).abs().max() < 0.04
    if not fitted:  # the box start is exactly average pooling and nearest upsampling
        assert (rec - F.interpolate(F.avg_pool2d(x, f), scale_factor=f, mode="nearest")).abs().max() < 0.04
    rim = 12 if fitted else 0  # zero padding darkens the fitted start's outermost pixels
    inner = (flat_rec - flat)[..., rim:64 - rim, rim:64 - rim]
    assert (inner.abs() * 127.5).max() < 1.5  # colour kept


def test_pooling_init_refuses_a_geometry_without_room_for_the_colour_path():
    from rsd_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="norm_groups"):
        init_as_pooling(VQAutoencoder(VQConfig(**{**SMALL_VQ, "ch": 16, "norm_groups": 8})))


def test_gradient_l1_is_zero_for_a_shift_and_positive_for_blur():
    x = torch.rand(1, 3, 16, 16)
    assert gradient_l1(x + 0.3, x).item() == pytest.approx(0.0, abs=1e-6)
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert gradient_l1(blurred, x).item() > 0.01


def test_vq_run_fits_the_codebook_and_restarts_dead_codes(make_config):
    from rsd_deploy.train.loops import Trainer

    cfg = make_config("vq", vq=None, teacher=None,
                      vq_train={"model": SMALL_VQ, "quantize_from": 2, "kmeans_batches": 4, "dead_after": 1,
                                "init": "pooling"},
                      optim={"iterations": 4, "lr": 1e-3, "precision": "bf16", "channels_last": True},
                      log={"checkpoint_every": 4})
    trainer = Trainer(cfg)
    assert trainer.vq is None
    logs = []
    out = trainer.run(callback=lambda i, log: logs.append(log))
    method = trainer.method
    assert bool(method.stats.fitted)
    # quantised iterations log code use; with dead_after=1 unused codes restart at current latents
    assert "vq/codes_used" in logs[-1] and any(log.get("vq/restarted", 0) > 0 for log in logs)
    assert all(torch.isfinite(torch.tensor(list(log.values()))).all() for log in logs)
    # the export is a VQ autoencoder that load_checkpoint rebuilds with its norm_groups
    from rsd_deploy.checkpoint import load_checkpoint

    assert out is not None and out.name == "vq.safetensors"
    loaded = load_checkpoint(out)
    assert isinstance(loaded, VQAutoencoder) and loaded.config.norm_groups == 8
    assert torch.equal(loaded.quantize.embedding.weight, method.model.quantize.embedding.weight.float())
    # rsd-train export of its last checkpoint: the recorded architecture (norm_groups 8), not shape inference
    from rsd_deploy.errors import CheckpointError
    from rsd_deploy.train import export_checkpoint

    ckpt = sorted((Path(cfg.output_dir) / "checkpoints").glob("step_*.pt"))[-1]
    exported = export_checkpoint(ckpt)
    assert exported.suffix == ".safetensors" and exported.name.startswith("vq_model_")
    again = load_checkpoint(exported)
    assert again.config == loaded.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in again.state_dict().items())
    with pytest.raises(CheckpointError, match="norm_groups=8.*safetensors"):
        export_checkpoint(ckpt, Path(cfg.output_dir) / "vq.pth")


def test_frozen_latents_trains_only_the_decoder_of_a_loaded_autoencoder(make_config):
    """Decoder fine-tuning keeps encoder, quant_conv and codebook bit-exact (a UNet trained on the latents stays
    valid) and moves the decoder; without `vq:` there is nothing to fine-tune."""
    from rsd_deploy.checkpoint import load_checkpoint
    from rsd_deploy.errors import ConfigError
    from rsd_deploy.train.loops import Trainer

    cfg = make_config("vq", teacher=None, vq_train={"frozen_latents": True},
                      optim={"iterations": 3, "lr": 1e-3, "warmup": 0})
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.method.model.state_dict().items()}
    out = trainer.run()
    after = load_checkpoint(out).state_dict()
    frozen = ("encoder.", "quant_conv.", "quantize.")
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith(frozen))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("decoder."))
    with pytest.raises(ConfigError, match="frozen_latents.*set `vq:`"):
        Trainer(make_config("vq", vq=None, teacher=None, vq_train={"model": SMALL_VQ, "frozen_latents": True}))


def test_vq_method_needs_no_teacher_but_checks_quantize_from(make_config):
    from rsd_deploy.errors import ConfigError
    from rsd_deploy.train.loops import Trainer

    with pytest.raises(ConfigError, match="quantize_from"):
        Trainer(make_config("vq", vq=None, teacher=None, vq_train={"model": SMALL_VQ, "quantize_from": 9}))


# ------------------------------------------------------------------ adversarial decoder term
def test_hinge_discriminator_loss_values():
    from rsd_deploy.train.losses import hinge_d_loss

    assert float(hinge_d_loss(torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 4, 4), -3.0))) == 0.0  # past margins
    assert float(hinge_d_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))) == pytest.approx(2.0)
    # only the margin violations count: real 0.5 -> 0.5, fake 0 -> 1
    assert float(hinge_d_loss(torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2))) == pytest.approx(1.5)


def test_adaptive_gan_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    from rsd_deploy.train.losses import adaptive_gan_weight

    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    rec, gan = (w ** 2).sum() * 3.0, (w ** 2).sum() * 0.5  # gradients 6w and 1w: ratio 6
    assert float(adaptive_gan_weight(rec, gan, w)) == pytest.approx(6.0, rel=1e-4)
    assert w.grad is None  # it measures, it does not accumulate gradients
    flat = (w * 0).sum()  # a generator term with no gradient: the weight saturates at the limit, no inf
    assert float(adaptive_gan_weight(rec, flat, w, limit=100.0)) == 100.0


def test_patch_discriminator_learns_to_tell_blur_from_detail():
    """One logit per patch, any size; a few hinge steps separate sharp noise images from their blurred copies."""
    from rsd_deploy.train.losses import PatchDiscriminator, hinge_d_loss

    torch.manual_seed(0)
    disc = PatchDiscriminator(channels=8, layers=2)
    assert disc(torch.zeros(1, 3, 64, 48)).shape == (1, 1, 16, 12)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.9))
    for _ in range(40):
        sharp = torch.rand(4, 3, 32, 32) * 2 - 1
        blurred = F.avg_pool2d(sharp, 4, stride=1, padding=2, count_include_pad=False)[..., :32, :32]
        loss = hinge_d_loss(disc(sharp), disc(blurred))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        sharp = torch.rand(4, 3, 32, 32) * 2 - 1
        blurred = F.avg_pool2d(sharp, 4, stride=1, padding=2, count_include_pad=False)[..., :32, :32]
        assert float(disc(sharp).mean()) > float(disc(blurred).mean()) + 0.5


def test_adversarial_decoder_fine_tuning_trains_a_discriminator_from_its_start_iteration(make_config):
    """With adversarial_weight the discriminator and its optimiser join the checkpoint, it trains only from
    adversarial_from on, the encoder and codebook stay frozen, and the exported autoencoder holds no
    discriminator."""
    from rsd_deploy.checkpoint import load_checkpoint
    from rsd_deploy.errors import ConfigError
    from rsd_deploy.train.checkpointing import load_training_state
    from rsd_deploy.train.loops import Trainer

    cfg = make_config("vq", teacher=None, vq_train={"frozen_latents": True, "adversarial_weight": 0.5,
                                                     "adversarial_from": 2, "disc_channels": 8, "disc_layers": 2},
                      optim={"iterations": 3, "lr": 1e-3, "warmup": 0}, log={"checkpoint_every": 3})
    trainer = Trainer(cfg)
    disc_before = {k: v.clone() for k, v in trainer.method.discriminator.state_dict().items()}
    enc_before = {k: v.clone() for k, v in trainer.method.model.state_dict().items() if k.startswith("encoder.")}
    out = trainer.run()
    logged = [h for h in trainer.history if "step" in h and "vq/l1" in h]
    assert [("vq/d_loss" in h) for h in logged] == [False, False, True]
    assert all(torch.isfinite(torch.tensor(h["vq/gan_balance"])) for h in logged if "vq/gan_balance" in h)
    state = load_training_state(Path(cfg.output_dir) / "checkpoints" / "step_0000003.pt")
    assert set(state["models"]) == {"model", "codebook", "discriminator"}
    assert "discriminator" in state["optimizers"]
    moved = [k for k, v in disc_before.items() if not torch.equal(state["models"]["discriminator"][k], v)]
    assert any(k.endswith("weight") for k in moved) and any(k.endswith("running_mean") for k in moved)
    exported = load_checkpoint(out).state_dict()
    assert not any("discriminator" in k or k.startswith("net.") for k in exported)
    assert all(torch.equal(exported[k], v) for k, v in enc_before.items())
    with pytest.raises(ConfigError, match="adversarial_weight"):
        Trainer(make_config("vq", teacher=None, vq_train={"frozen_latents": True, "adversarial_weight": -1}))
