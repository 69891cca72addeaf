"""The shared training loop: setup, data -> latents, method step, EMA, logging, validation, checkpoints.

A *method* (``rsd.RSDMethod``, ``sinsr.SinSRMethod``, ``teacher.TeacherMethod``) owns its networks and
optimisers and implements one optimiser iteration; :class:`Trainer` does everything around it.
All training randomness (timesteps, noises) comes from one CPU ``torch.Generator`` per rank whose
state (with the global torch/CUDA states) is checkpointed for every rank, and the data stream is
positioned exactly, so ``--resume`` continues the same run on every rank.

The run folder is settled before any network is loaded (:mod:`rsd_deploy.train.rundir`): an
unwritable or already used ``output_dir`` fails at once with one line.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from rsd_deploy.backends.capabilities import training_precision
from rsd_deploy.errors import RSDError
from rsd_deploy.models.schedule import Schedule
from rsd_deploy.train import checkpointing
from rsd_deploy.train.config import ConfigError, Method as MethodName, TrainConfig
from rsd_deploy.train import rundir
from rsd_deploy.train.data import BatchStream, DegradedHRDataset, LoaderState, PairedDataset, read_split
from rsd_deploy.train.distributed import (DistInfo, all_reduce_mean, any_rank, barrier, broadcast_object,
                                          gather_objects, init_distributed)
from rsd_deploy.train.ema import unwrap
from rsd_deploy.train.losses import ScheduleTensors
from rsd_deploy.train.method import Batch, load_network
from rsd_deploy.train.methods import build_method

logger = logging.getLogger(__name__)


class Trainer:
    """Builds data, VQ, schedule and the method from a :class:`TrainConfig`; runs, logs, checkpoints."""

    def __init__(self, cfg: TrainConfig, resume: Optional[str | Path] = None,
                 dist_info: Optional[DistInfo] = None, new_run: bool = False) -> None:
        self.cfg = cfg
        self.dist = dist_info or init_distributed(cfg.device)
        cfg.validate(self.dist.world_size)
        self.device = self.dist.device
        self.precision = training_precision(cfg.optim.precision, str(self.device))  # fp32 | bf16
        self.accumulation = cfg.optim.batch_size // (cfg.optim.micro_batch * self.dist.world_size)
        self._check_inputs()
        resume_state = self._open_run(resume, new_run)  # before the long work: fail fast on a bad folder
        self.output_dir = Path(cfg.output_dir)
        self.schedule = Schedule.preset(cfg.schedule)
        self.sched = ScheduleTensors(self.schedule, self.device)
        torch.manual_seed(cfg.seed + self.dist.rank)
        self.generator = torch.Generator().manual_seed(cfg.seed * 7919 + self.dist.rank)
        # method vq trains the autoencoder itself; every other method takes it frozen
        self.vq = (None if cfg.method == MethodName.VQ else
                   load_network(cfg.vq, "vq").to(self.device).eval().requires_grad_(False))  # type: ignore[arg-type]
        d = cfg.data
        self.stream = BatchStream(self._dataset(), cfg.optim.micro_batch, cfg.seed, self.dist.rank,
                                  self.dist.world_size, d.workers, d.queue_size)
        self.iteration = 0
        self.history: List[Dict[str, float]] = []  # all-reduced logs (the same on every rank), checkpointed
        self.local_history: List[Dict[str, float]] = []  # this rank's own logs before the mean, this session
        self.written: List[Path] = []  # checkpoints this run wrote (the only ones it may rotate out)
        self.exported: List[Path] = []
        self.samples = 0  # training samples drawn by this process (throughput)
        self.method = build_method(cfg, self)
        if cfg.optim.channels_last:
            for net in [*self.method.models.values(), *([self.vq] if self.vq is not None else [])]:
                net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._check_crop_fits(unwrap(self.method.deployable()))
        self._writer = None
        self._purge_step: Optional[int] = None
        if resume_state is not None:
            self.load(resume_state)

    def _check_crop_fits(self, net: nn.Module) -> None:
        """The HR crop's latent (gt_size / 4, VQ-f4) must be a multiple of the UNet's input multiple."""
        multiple = int(getattr(getattr(net, "config", None), "input_multiple", 1))
        latent = self.cfg.data.gt_size // 4
        if latent % multiple:
            need = 4 * multiple
            fix = max(need, round(self.cfg.data.gt_size / need) * need)
            raise ConfigError(f"data.gt_size {self.cfg.data.gt_size} gives {latent} px latents; this UNet takes "
                              f"multiples of {multiple}: use a multiple of {need} (data.gt_size={fix})")

    # ----------------------------------------------------------------- run folder
    def _check_inputs(self) -> None:
        """Folders named in the config exist (checked now, not when validation first runs)."""
        cfg = self.cfg
        folders = [("data.hr_dirs", d) for d in cfg.data.hr_dirs]
        folders += [(k, v) for k, v in (("data.lq_dir", cfg.data.lq_dir), ("data.gt_dir", cfg.data.gt_dir),
                                        ("val.lq_dir", cfg.val.lq_dir), ("val.gt_dir", cfg.val.gt_dir)) if v]
        source = getattr(cfg, "source", None)
        where = f" in {source}" if source else ""
        for key, folder in folders:
            if not Path(folder).is_dir():
                raise ConfigError(f"{key} folder {folder} does not exist; fix {key}{where} or pass {key}=PATH")

    def _open_run(self, resume: Optional[str | Path], new_run: bool) -> Optional[Dict[str, Any]]:
        """Settle ``cfg.output_dir`` (rank 0 decides, every rank follows); return the resume state."""
        state = checkpointing.load_training_state(Path(resume)) if resume is not None else None
        decision: Tuple[Optional[str], Optional[str]] = (None, None)
        if self.dist.is_main:
            try:
                decision = (str(self._choose_folder(state, new_run)), None)
            except RSDError as exc:
                decision = (None, str(exc))
        folder, error = broadcast_object(decision)
        if error is not None:
            raise ConfigError(error)
        self.cfg.output_dir = folder  # type: ignore[assignment]
        return state

    def _choose_folder(self, state: Optional[Dict[str, Any]], new_run: bool) -> Path:
        cfg = self.cfg
        out = Path(cfg.output_dir)
        if state is None:
            held = rundir.describe_run(out)
            if held is not None and not new_run:
                raise ConfigError(f"output_dir {out} already holds a run ({held}); add --resume {out} to continue "
                                  "it, or --new-run to start a separate run beside it (nothing is touched)")
            target = rundir.next_free(out) if held is not None else out
            if held is not None:
                logger.info("starting a new run in %s (%s holds an earlier run: %s; left untouched)", target, out, held)
            rundir.check_writable(target)
            return target
        ckpt = Path(state["path"])
        step = int(state["step"])
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        if step >= cfg.optim.iterations:
            raise ConfigError(f"{ckpt} is at step {step}, already optim.iterations {cfg.optim.iterations}: "
                              f"nothing to train; add optim.iterations={step + cfg.optim.iterations} to continue, "
                              "or export its EMA with rsd-train export")
        if new_run:
            target = rundir.next_free(run)
            logger.info("new run %s starts from %s (step %d); %s is left untouched", target, ckpt, step, run)
            rundir.check_writable(target)
            return target
        skipped = set(state.get("skipped", []))
        newer = [p for p in checkpointing.checkpoints_in(ckpt.parent)
                 if checkpointing.checkpoint_step(p) > checkpointing.checkpoint_step(ckpt) and str(p) not in skipped]
        if newer:
            raise ConfigError(f"{run} has checkpoints after {ckpt.name} (latest {newer[-1].name}); continue from "
                              f"the latest with --resume {run}, or fork from {ckpt.name} with --new-run")
        rundir.check_writable(run)
        if run.resolve() != out.resolve():
            logger.info("resuming the run in %s (output_dir from the config, %s, is not used)", run, out)
        logger.info("resuming %s from %s at step %d", run, ckpt.name, step)
        rundir.trim_metrics(run / rundir.METRICS, step)
        return run

    # ----------------------------------------------------------------- data
    def _dataset(self):  # noqa: ANN202
        d = self.cfg.data
        if d.hr_dirs:
            only = read_split(d.hr_split, "train") if d.hr_split else None
            return DegradedHRDataset(d.hr_dirs, d.gt_size, d.scale, d.hflip, d.degradation, self.cfg.seed,
                                     cache_bytes=d.cache_mb << 20, length=d.length, rescale_gt=d.rescale_gt,
                                     only=only, zoom_range=tuple(d.zoom_range))
        return PairedDataset(d.lq_dir, d.gt_dir, d.gt_size // d.scale, d.scale, d.hflip, self.cfg.seed)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _vq_precision(self) -> Iterator[None]:
        if self.device.type == "cuda" and self.cfg.optim.vq_fp16:
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, H/4, W/4) float32 latent (frozen VQ, fp16 on CUDA)."""
        with self._vq_precision():
            return self.vq.encode(image).float()  # type: ignore[operator]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> image with a straight-through quantiser, so gradients reach z (LPIPS on student outputs)."""
        with torch.no_grad():
            z_q, _ = self.vq.quantize(z.float())  # type: ignore[operator]
        z_st = z + (z_q - z).detach()
        with self._vq_precision():
            return self.vq.decode(z_st, quantize=False).float()  # type: ignore[operator]

    def next_images(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The next micro-batch as images: (LR, HR), both in [-1, 1], on the device."""
        raw = self.stream.next()
        self.samples += raw["gt"].shape[0]
        return raw["lq"].to(self.device), raw["gt"].to(self.device)

    def next_batch(self) -> Batch:
        lq, gt = self.next_images()
        up = F.interpolate(lq, scale_factor=self.cfg.data.scale, mode="bicubic", align_corners=False)
        return Batch(z0=self.encode(gt), z_y=self.encode(up), lq=lq, gt=gt)

    def randn(self, shape: Tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator).to(self.device)

    def randint(self, low: int, high: int, n: int) -> torch.Tensor:
        """(n,) int64 uniform on {low .. high} inclusive."""
        return torch.randint(low, high + 1, (n,), generator=self.generator).to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def make_optimizer(self, params: Any) -> torch.optim.Optimizer:
        o = self.cfg.optim
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)  # type: ignore[arg-type]

    def set_lr(self, optimizer: torch.optim.Optimizer, iteration: int) -> None:
        o = self.cfg.optim
        factor = min(1.0, (iteration + 1) / o.warmup) if o.warmup > 0 else 1.0
        if o.lr_decay == "cosine":
            progress = min(1.0, iteration / max(o.iterations, 1))
            factor *= o.lr_final + (1 - o.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = o.lr * factor

    def wrap_ddp(self, model: nn.Module, find_unused: bool = False) -> nn.Module:
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)

    def accumulate(self, model: nn.Module, micro: int) -> contextlib.AbstractContextManager:
        """Skip the DDP gradient all-reduce on all but the last micro-batch."""
        if self.dist.enabled and micro < self.accumulation - 1 and hasattr(model, "no_sync"):
            return model.no_sync()  # type: ignore[operator]
        return contextlib.nullcontext()

    def clip(self, model: nn.Module) -> float:
        """Clip to ``optim.grad_clip`` when set; returns the total gradient norm before clipping (logged)."""
        limit = self.cfg.optim.grad_clip or float("inf")
        params = [p for p in model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(params, limit))

    # ----------------------------------------------------------------- state
    def rank_state(self) -> Dict[str, Any]:
        """What differs between ranks: random generators and the pair queue."""
        queue = self.stream.queue
        return {"rng": checkpointing.rng_state(self.generator),
                "queue": queue.state_dict() if queue is not None else None}

    def state_dict(self, ranks: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        ranks = ranks if ranks is not None else [self.rank_state()]
        deployable = unwrap(self.method.deployable())
        # which entry of "models" `rsd-train export` writes, and its architecture: shapes alone cannot tell
        # norm_groups, so the export must not infer it
        network = next((k for k, m in self.method.models.items() if unwrap(m) is deployable), None)
        return {
            "step": self.iteration,
            "config": self.cfg.to_dict(),
            "world_size": self.dist.world_size,
            "network": network,
            "network_config": deployable.config.to_dict() if network is not None else None,
            "models": {k: unwrap(m).state_dict() for k, m in self.method.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.method.optimizers.items()},
            "rng": {"ranks": [r["rng"] for r in ranks]},
            "data": {"epoch": self.stream.state.epoch, "consumed": self.stream.state.consumed,
                     "queues": [r["queue"] for r in ranks]},
            "history": self.history,
        }

    def load(self, source: str | Path | Dict[str, Any]) -> None:
        """Restore a checkpoint (a path, or a state read by ``load_training_state``) on this rank."""
        state = source if isinstance(source, dict) else checkpointing.load_training_state(Path(source))
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"{state['path']} was written by {state['world_size']} processes; resume with the "
                              f"same number (now {self.dist.world_size})")
        saved_method = state["config"].get("method")
        if saved_method != self.cfg.method.value:
            raise ConfigError(f"{state['path']} is a {saved_method} run; this config trains {self.cfg.method.value}")
        for name, model in self.method.models.items():
            unwrap(model).load_state_dict(state["models"][name])
        for name, opt in self.method.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        rank = self.dist.rank
        ranks = state["rng"].get("ranks")
        if ranks is None:  # written before per-rank states: every rank gets rank 0's
            if self.dist.world_size > 1:
                logger.warning("%s holds rank 0's random state only; ranks will not repeat their draws", state["path"])
            checkpointing.restore_rng(state["rng"], self.generator)
        else:
            checkpointing.restore_rng(ranks[rank], self.generator)
        data = state["data"]
        self.stream.load_state(LoaderState(data["epoch"], data["consumed"]))
        queues = data.get("queues") or []
        if self.stream.queue is not None and rank < len(queues) and queues[rank] is not None:
            self.stream.queue.load_state_dict(queues[rank])
        elif self.stream.queue is not None:
            logger.warning("%s has no pair queue; the queue starts empty", state["path"])
        self.iteration = int(state["step"])
        self._purge_step = self.iteration
        self.history = list(state.get("history", []))
        logger.info("resumed from %s at iteration %d", state["path"], self.iteration)

    def save(self) -> Optional[Path]:
        """Every rank calls this (each contributes its random state); rank 0 writes the file."""
        ranks = gather_objects(self.rank_state())
        if not self.dist.is_main:
            return None
        folder = self.output_dir / "checkpoints"
        path = checkpointing.free_checkpoint_path(folder, self.iteration, self.written)
        if path.name != f"step_{self.iteration:07d}.pt":
            logger.warning("%s exists from an earlier run and is kept; this checkpoint is %s",
                           folder / f"step_{self.iteration:07d}.pt", path.name)
        return checkpointing.save_training_state(path, self.state_dict(ranks), keep=self.cfg.log.keep_checkpoints,
                                                 written=self.written)

    # ----------------------------------------------------------------- logging
    def _tensorboard(self):  # noqa: ANN202
        if self._writer is None and self.cfg.log.tensorboard and self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events a crashed run logged after the resumed checkpoint
                self._writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self._purge_step)
            except ImportError:
                logger.warning("tensorboard is not installed; scalars go to the console and metrics.jsonl only "
                               "(pip install tensorboard)")
                self.cfg.log.tensorboard = False
        return self._writer

    def log_scalars(self, logs: Dict[str, float]) -> None:
        """Scalars to TensorBoard (when installed) and always to ``output_dir/metrics.jsonl``."""
        if not logs or not self.dist.is_main:
            return
        import json

        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / rundir.METRICS, "a") as f:
            f.write(json.dumps(dict(logs, step=self.iteration)) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            for key, value in logs.items():
                writer.add_scalar(key, value, self.iteration)

    def log_run_start(self) -> None:
        """One ``{"event": "run_start", ...}`` line in metrics.jsonl with the choices a reader needs
        to compare runs (no ``step`` key: metric lines stay one per step)."""
        if not self.dist.is_main:
            return
        import json

        r, c = self.cfg.rsd, self.cfg
        record = {"event": "run_start", "at_step": self.iteration, "method": c.method.value,
                  "world_size": self.dist.world_size, "rsd.lpips_input": r.lpips_input,
                  "rsd.loss_reduction": r.loss_reduction, "rsd.generator_loss": r.generator_loss,
                  "lpips.net": c.lpips.net, "data.rescale_gt": c.data.rescale_gt, "data.queue_size": c.data.queue_size,
                  "precision": self.precision}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / rundir.METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def write_samples(self, batch: Batch) -> None:
        """A PNG (and TensorBoard image) of LR (bicubic) | output | HR for up to 4 validation crops."""
        if not self.dist.is_main:
            return
        import cv2
        import numpy as np

        out = self.sample(self.method.deployable(), batch.z_y[:4], batch.lq[:4])
        lr_up = F.interpolate(batch.lq[:4], scale_factor=self.cfg.data.scale, mode="bicubic", align_corners=False)
        rows = torch.cat([torch.cat([lr_up, out, batch.gt[:4]], dim=3)], dim=0).clamp(-1, 1)
        grid = torch.cat(list(rows), dim=1)  # (3, 4*H, 3*W)
        img = ((grid.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
        folder = self.output_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"step_{self.iteration:07d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        writer = self._tensorboard()
        if writer is not None:
            writer.add_image("samples/bicubic_output_hr", (grid + 1) / 2, self.iteration)

    # ----------------------------------------------------------------- sampling / validation
    @torch.no_grad()
    def sample(self, net: nn.Module, z_y: torch.Tensor, lq: torch.Tensor, one_step: Optional[bool] = None,
               seed: int = 0) -> torch.Tensor:
        """Images in [-1, 1] from the deployable network (one step, or the full T-step sampler)."""
        from rsd_deploy.models.sampler import sample_onestep, sample_resshift

        one_step = self.method.one_step if one_step is None else one_step
        gen = torch.Generator(device=z_y.device).manual_seed(seed)
        fn = sample_onestep if one_step else sample_resshift
        z = fn(net, self.schedule, z_y, lq, generator=gen)
        with self._vq_precision():
            return self.vq.decode(z).float()  # type: ignore[operator]

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        v = self.cfg.val
        if not self.dist.is_main:
            return {}
        own = self.method.validate(self)
        if own is not None:
            logger.info("validation at %d: %s", self.iteration, ", ".join(f"{k} {val:.4f}" for k, val in own.items()))
            return own
        if not (v.lq_dir and v.gt_dir):
            return {}
        from rsd_deploy.train.evaluate import evaluate_pairs

        metrics = evaluate_pairs(self.method.deployable(), self.vq, self.schedule, v.lq_dir, v.gt_dir,
                                 one_step=self.method.one_step, max_images=v.max_images, seed=v.seed,
                                 device=self.device, lpips=getattr(self.method, "lpips", None))
        logs = {f"val/{k}": float(metrics[k]) for k in ("psnr", "ssim", "lpips") if metrics.get(k) is not None}
        if logs and getattr(self.method, "lpips", None) is not None:
            logs["val/lpips_" + self.cfg.lpips.net] = logs.pop("val/lpips")
        logger.info("validation at %d: %s", self.iteration, ", ".join(f"{k} {val:.4f}" for k, val in logs.items()))
        return logs

    # ----------------------------------------------------------------- loop
    def run(self, max_iterations: Optional[int] = None,
            callback: Optional[Callable[[int, Dict[str, float]], None]] = None) -> Optional[Path]:
        """Train to ``optim.iterations`` (or stop after ``max_iterations`` more, e.g. in tests).

        Returns the exported deployable checkpoint path when training completed, else None.
        """
        from tqdm import tqdm

        cfg = self.cfg
        end = cfg.optim.iterations if max_iterations is None else min(cfg.optim.iterations,
                                                                       self.iteration + max_iterations)
        self.log_run_start()
        bar = tqdm(total=cfg.optim.iterations, initial=self.iteration, disable=not self.dist.is_main,
                   desc=f"rsd-train {cfg.method.value}", dynamic_ncols=True)
        started, first = time.time(), self.iteration
        window = (time.time(), self.samples)  # throughput since the last logged line
        self._reset_peak_memory()
        while self.iteration < end:
            logs = self.method.step(self, self.iteration)
            # every rank must take the same branch: a rank raising alone would leave the others in all_reduce
            bad = not all(math.isfinite(v) for v in logs.values())
            if any_rank(bad, self.device):
                where = f"on rank {self.dist.rank} " if bad and self.dist.enabled else ("on another rank " if not bad else "")
                raise RSDError(f"a loss became non-finite {where}at iteration {self.iteration} "
                               f"({', '.join(f'{k} {v:.4g}' for k, v in logs.items())}); lower optim.lr or use "
                               "optim.precision=fp32")
            self.iteration += 1
            self.local_history.append(dict(logs, step=self.iteration))
            logs = {k: float(all_reduce_mean(torch.tensor(v, device=self.device))) for k, v in logs.items()}
            self.history.append(dict(logs, step=self.iteration))
            if callback is not None:
                callback(self.iteration, logs)
            speed = (self.iteration - first) / max(time.time() - started, 1e-9)
            bar.update(1)
            bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in list(logs.items())[:4]} | {"it/s": f"{speed:.2f}"})
            if self.iteration % cfg.log.every == 0 or self.iteration == end:
                perf, window = self._perf(window)
                self.log_scalars(dict(logs, **perf))
                logger.info("iteration %d %s (%.2f it/s, %.1f images/s)", self.iteration,
                            " ".join(f"{k} {v:.5g}" for k, v in logs.items()), speed, perf["perf/images_per_s"])
            if cfg.val.every and self.iteration % cfg.val.every == 0:
                self.log_scalars(self.validate())
                barrier()  # rank 0 validated alone; the others wait here, not inside the next all-reduce
            if cfg.log.sample_every and self.vq is not None and self.iteration % cfg.log.sample_every == 0:
                self.write_samples(self.next_val_batch())
                barrier()
            if cfg.log.checkpoint_every and self.iteration % cfg.log.checkpoint_every == 0:
                self.save()
                barrier()
        bar.close()
        if self.iteration >= cfg.optim.iterations:
            if cfg.log.checkpoint_every and self.iteration % cfg.log.checkpoint_every:
                self.save()
                barrier()
            return self.export()
        return None

    def _reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _perf(self, window: Tuple[float, int]) -> Tuple[Dict[str, float], Tuple[float, int]]:
        """images/s over all ranks since the last log line, and this rank's peak memory (MiB)."""
        now, samples = time.time(), self.samples
        rate = (samples - window[1]) * self.dist.world_size / max(now - window[0], 1e-9)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
            key = "perf/peak_cuda_mib"
        else:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
            key = "perf/peak_rss_mib"
        return {"perf/images_per_s": rate, key: float(peak)}, (now, samples)

    def next_val_batch(self) -> Batch:
        """A fixed, small batch for sample images: the first validation pairs, else a training batch."""
        v = self.cfg.val
        if v.lq_dir and v.gt_dir:
            ds = PairedDataset(v.lq_dir, v.gt_dir, lq_size=self.cfg.data.gt_size // self.cfg.data.scale,
                               scale=self.cfg.data.scale, hflip=False, seed=v.seed)
            items = [ds[i] for i in range(min(4, len(ds)))]
            lq = torch.stack([x["lq"] for x in items]).to(self.device)
            gt = torch.stack([x["gt"] for x in items]).to(self.device)
            up = F.interpolate(lq, scale_factor=self.cfg.data.scale, mode="bicubic", align_corners=False)
            return Batch(self.encode(gt), self.encode(up), lq, gt)
        return self.next_batch()

    def export(self) -> Optional[Path]:
        """The deployable network (EMA) as ``output_dir/<method>_ema.safetensors``.

        An export left by an earlier session of this run is kept: this one is then named
        ``<method>_ema_step_<N>.safetensors``.
        """
        if not self.dist.is_main:
            return None
        net = unwrap(self.method.deployable())
        stem = self.method.export_stem or f"{self.cfg.method.value}_ema"
        path = self.output_dir / f"{stem}.safetensors"
        if path.exists() and path not in self.exported:
            path = path.with_name(f"{stem}_step_{self.iteration:07d}.safetensors")
        out = checkpointing.export_model(net, path, {"method": self.cfg.method.value, "iteration": self.iteration,
                                                     "schedule": self.cfg.schedule, "seed": self.cfg.seed})
        self.exported.append(out)
        return out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
