"""``faceanon train``: the dp68 training loop, resumable, single GPU, multi-GPU (torchrun) or CPU.

Needs only torch, numpy and OpenCV (with the shards of :mod:`.data` already prepared), so it runs
on a stock PyTorch machine::

    python -m fiftyone_faceanon.gan.train --shards .data/dp68_128 --run-dir runs/base \\
        --preset base --minutes 20                     # one GPU; rerun to continue
    torchrun --nproc_per_node=8 -m fiftyone_faceanon.gan.train --shards ... --run-dir ... \\
        --preset base

Losses (non-saturating GAN with lazy R1, Mescheder et al. 2018), with ``y = G(x, m, l, z)``::

    L_D = softplus(D(y)) + softplus(-D(x)) + r1_every * gamma / 2 * |grad_x D(x)|^2  (R1 lazily)
    L_G = softplus(-D(y)) + l1 * |y - x|_m - div * min(|y1 - y2|_m / |z1 - z2|, 1)

where ``|.|_m`` is the mean absolute difference inside the face region and the last term is the
diversity-sensitive loss (Yang et al. 2019, capped at 1; the uncapped ``1 / ratio`` of MSGAN blew
up here once G ignored the noise). The generator's weights
are tracked by an exponential moving average (``ema``); that copy is sampled and exported.

Every batch, flip and noise vector is a function of ``(seed, rank, step)`` alone, so a run
resumed from a checkpoint continues exactly as if it had not stopped. With ``WORLD_SIZE > 1``
(torchrun) each rank draws its own batches and the gradients are averaged across ranks with
``all_reduce`` before every optimiser step (data parallel; done by hand, as StyleGAN2-ADA does,
because R1's double backward does not go through ``DistributedDataParallel``). On CUDA the forward
passes run in bfloat16 autocast (R1 in float32).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..parallel import in_order
from .nets import Discriminator, Generator, NetConfig, parameter_count
from .shards import conditioning, load_faces

CHECKPOINT = "checkpoint.pt"
#: The EMA generator and D in bfloat16, no optimiser state: small enough (15 MiB for ``base``) to
#: come back from a GPU machine and travel to the next one with the shards.
PORTABLE = "portable.pt"
#: Where a run's :data:`PORTABLE` state is kept between GPU sessions, inside ``models/`` (with a
#: manifest entry, left out of the wheel): the development machine and ``.data`` do not outlive
#: a session, so without it each session's training would start again at step 0.
KEPT_STATE = "training/dp68_{resolution}_state.pt"
#: Largest file :func:`keep_state` and ``faceanon export-dp68`` put into ``models/`` (``base``'s
#: portable state: 15.5 MiB, its generator 10 MiB; a full checkpoint is ~113 MiB).
MODELS_FILE_MAX = 32 * 2**20


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a run; ``batch`` is per rank."""

    net: NetConfig = field(default_factory=NetConfig)
    batch: int = 16
    lr_g: float = 0.002
    lr_d: float = 0.002
    r1_gamma: float = 1.0
    r1_every: int = 4
    l1: float = 0.0
    div: float = 0.0
    ema: float = 0.999
    steps: int = 100_000
    holdout: int = 8
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    seed: int = 0
    amp: bool = True

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{**d, "net": NetConfig(**d["net"])})


PRESETS = {
    # CPU smoke test: a few steps on a handful of faces.
    "tiny": TrainConfig(NetConfig(64, 8, 32, 16), batch=4, ema=0.9, holdout=2, log_every=1,
                        sample_every=2, checkpoint_every=2, l1=1.0, div=0.1),
    # What fits a shared CPU in under an hour: 64 px, about 0.4 M generator parameters.
    "cpu": TrainConfig(NetConfig(64, 16, 64, 64), batch=8, lr_g=0.001, lr_d=0.001, ema=0.99,
                       log_every=25, sample_every=250, checkpoint_every=250, l1=1.0, div=0.1),
    # The GPU configuration: 128 px, 5.2 M generator parameters (10 MiB in fp16).
    "base": TrainConfig(NetConfig(128, 64, 192, 128), batch=64, lr_g=1e-4, lr_d=1e-4,
                        ema=0.999, r1_gamma=10.0,
                        l1=0.0, div=0.05, steps=100_000, sample_every=2000,
                        checkpoint_every=2000, log_every=100),
}


def batch_rng(cfg: TrainConfig, rank: int, step: int) -> np.random.Generator:
    """The generator that draws step ``step``'s batch on ``rank``."""
    return np.random.default_rng([cfg.seed, rank, step])


def draw_batch(cfg: TrainConfig, rank: int, step: int, crops: np.ndarray,
               landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The :func:`conditioning` of step ``step``'s batch on ``rank``: ``cfg.batch`` faces of
    ``crops`` (N, S, S, 3) and ``landmarks`` (N, 68, 2) drawn by :func:`batch_rng`, each mirrored
    with probability 1/2. A function of its arguments alone, so batches can be prepared ahead in
    other threads."""
    rng = batch_rng(cfg, rank, step)
    idx = rng.integers(len(crops), size=cfg.batch)
    flips = rng.random(cfg.batch) < 0.5
    return conditioning(crops[idx], landmarks[idx], flips)


def masked_l1(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean |a - b| over the pixels where the (N, 1, S, S) mask ``m`` is 1."""
    return ((a - b).abs() * m).sum() / (m.sum() * a.shape[1] + 1e-8)


def all_reduce_grads(params, world: int) -> None:
    """Average the gradients of ``params`` over the ranks (no-op on one process)."""
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


class Trainer:
    """G, D, the EMA copy of G and their optimisers; :meth:`step` runs one iteration.
    ``channels_last``: weights and batches in the (N, H, W, C) memory layout, which cuDNN's
    tensor-core convolutions work in; the same numbers up to float rounding
    (``benchmarks/bench_gan_train.py`` times both). On a CUDA device it turns on cuDNN's
    benchmark mode for the process (the shapes never change)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1,
                 channels_last: bool = False):
        self.cfg, self.device, self.rank, self.world = cfg, device, rank, world
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels
        torch.manual_seed(cfg.seed)
        self.G = Generator(cfg.net).to(device, memory_format=self.layout)
        self.D = Discriminator(cfg.net).to(device, memory_format=self.layout)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        r1_ratio = cfg.r1_every / (cfg.r1_every + 1)  # lazy-regularisation correction
        self.opt_g = torch.optim.Adam(self.G.parameters(), cfg.lr_g, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), cfg.lr_d * r1_ratio,
                                      betas=(0.0, 0.99**r1_ratio))
        self.step_count = 0
        self.train_seconds = 0.0

    def autocast(self):
        return torch.autocast("cuda", torch.bfloat16,
                              enabled=self.cfg.amp and self.device.type == "cuda")

    def noise(self, step: int, n: int, stream: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((self.cfg.seed, self.rank, step, stream)) % 2**63)
        return torch.randn(n, self.cfg.net.z_dim, generator=g).to(self.device)

    def tensors(self, arrays) -> list[torch.Tensor]:
        """(N, C, S, S) arrays -> tensors on the device, in the trainer's memory layout."""
        return [torch.from_numpy(a).to(self.device, non_blocking=True)
                .contiguous(memory_format=self.layout) for a in arrays]

    def step(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
        """One D step (+ R1 every ``r1_every``), one G step and the EMA update, on ``batch``:
        this step's :func:`draw_batch`. Returns the losses as 0-d tensors on the device, so that the
        step does not wait for the device to finish it (read them every ``log_every`` steps)."""
        cfg, t = self.cfg, self.step_count
        x, m, l = self.tensors(batch)
        z = self.noise(t, cfg.batch, 0)
        logs = {}

        with self.autocast():
            with torch.no_grad():
                fake = self.G(x, m, l, z)
            loss_d = F.softplus(self.D(fake, m, l)).mean() + F.softplus(-self.D(x, m, l)).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        all_reduce_grads(self.D.parameters(), self.world)
        self.opt_d.step()
        logs["loss_d"] = loss_d.detach()

        if t % cfg.r1_every == 0:
            xr = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(xr, m, l).sum(), xr, create_graph=True)
            r1 = grad.square().sum([1, 2, 3]).mean()
            self.opt_d.zero_grad(set_to_none=True)
            (r1 * cfg.r1_gamma / 2 * cfg.r1_every).backward()
            all_reduce_grads(self.D.parameters(), self.world)
            self.opt_d.step()
            logs["r1"] = r1.detach()

        with self.autocast():
            fake = self.G(x, m, l, z)
            adv = F.softplus(-self.D(fake, m, l)).mean()
            loss_g = adv
            logs["adv"] = adv.detach()
            if cfg.l1:
                l1 = masked_l1(fake, x, m)
                loss_g = loss_g + cfg.l1 * l1
                logs["l1"] = l1.detach()
            if cfg.div:
                h = max(cfg.batch // 2, 1)
                z2 = self.noise(t, h, 1)
                fake2 = self.G(x[:h], m[:h], l[:h], z2)
                ratio = masked_l1(fake[:h], fake2, m[:h]) / (z[:h] - z2).abs().mean()
                loss_g = loss_g - cfg.div * ratio.clamp(max=1.0)
                logs["diversity"] = ratio.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        all_reduce_grads(self.G.parameters(), self.world)
        self.opt_g.step()
        logs["loss_g"] = loss_g.detach()

        beta = min(cfg.ema, (1 + t) / (10 + t))
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                pe.lerp_(p, 1 - beta)
        self.step_count += 1
        return logs

    def state(self) -> dict:
        return {
            "config": self.cfg.as_dict(),
            "step": self.step_count,
            "train_seconds": self.train_seconds,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "hardware": hardware(self.device, self.world),
        }

    def load(self, state: dict) -> None:
        for name in ("G", "D", "G_ema", "opt_g", "opt_d"):
            getattr(self, name).load_state_dict(state[name])
        self.step_count = state["step"]
        self.train_seconds = state["train_seconds"]

    def portable(self) -> dict:
        """The state of :data:`PORTABLE`: EMA G and D in bfloat16, no optimiser state."""
        def half(net: torch.nn.Module) -> dict:
            return {k: v.bfloat16().cpu() for k, v in net.state_dict().items()}

        return {"config": self.cfg.as_dict(), "step": self.step_count,
                "train_seconds": self.train_seconds, "hardware": hardware(self.device, self.world),
                "G_ema": half(self.G_ema), "D": half(self.D)}

    def load_portable(self, state: dict) -> None:
        """Continue from a :data:`PORTABLE` state: G and its EMA both start from the EMA
        weights, the optimisers start afresh (with beta1 = 0 Adam forgets in ~100 steps)."""
        ema = {k: v.float() for k, v in state["G_ema"].items()}
        self.G.load_state_dict(ema)
        self.G_ema.load_state_dict(ema)
        self.D.load_state_dict({k: v.float() for k, v in state["D"].items()})
        self.step_count = state["step"]
        self.train_seconds = state["train_seconds"]


def hardware(device: torch.device, world: int) -> str:
    """E.g. ``"1 x NVIDIA H100 80GB HBM3"`` or ``"CPU, 1 thread"``."""
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    return f"CPU, {torch.get_num_threads()} thread(s) x {world} process(es)"


def save_atomic(obj, path: Path, limit: int | None = None) -> None:
    """``torch.save`` through a temporary file and a rename, so an interrupted run never leaves
    a half-written checkpoint; a file over ``limit`` bytes is not written (ValueError), and
    ``path`` keeps what it held. (Not ``images.atomic_write``: that module imports Pillow,
    which a stock PyTorch machine may lack.)"""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    if limit is not None and tmp.stat().st_size > limit:
        tmp.unlink()
        raise ValueError(f"{path}: over the {limit >> 20} MiB limit of models/")
    os.replace(tmp, path)


def save_checkpoint(trainer: Trainer, run: Path) -> None:
    """Write the trainer's full state to ``run/checkpoint.pt`` and its portable state to
    ``run/portable.pt``, atomically."""
    save_atomic(trainer.state(), run / CHECKPOINT)
    save_atomic(trainer.portable(), run / PORTABLE)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)


def sample_grid(G: Generator, crops: np.ndarray, landmarks: np.ndarray, device: torch.device,
                seeds: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """An RGB uint8 grid: one column per face; rows: original, the masked input with the
    landmark image drawn on it, then G's output for each noise seed."""
    x, m, l = (torch.from_numpy(a).to(device) for a in conditioning(crops, landmarks))
    lines = l.amax(1, keepdim=True)
    rows = [x, x * (1 - m) * (1 - lines) + lines]
    with torch.no_grad():
        for s in seeds:
            z = torch.randn(len(x), G.cfg.z_dim, generator=torch.Generator().manual_seed(s))
            rows.append(G(x, m, l, z.to(device)))
    grid = torch.cat([torch.cat(list(r.clamp(-1, 1)), 2) for r in rows], 1)
    return ((grid.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)


def train(shards: Path, run: Path, preset: str = "base", steps: int | None = None,
          minutes: float | None = None, resolution: int | None = None, batch: int | None = None,
          limit: int | None = None, device: str = "auto", threads: int | None = None,
          channels_last: bool = False, start: Path | None = None,
          on_log=lambda record: None) -> dict:
    """Train (or continue) the run in ``run`` on the faces in ``shards`` until ``steps`` are done
    or ``minutes`` have passed, whichever comes first; return the last log record.

    A fresh run takes ``PRESETS[preset]`` (``resolution`` and ``batch`` override it), or, with
    ``start`` (a :data:`PORTABLE` state, e.g. the one :func:`keep_state` kept in ``models/``),
    that state's config and weights; a run with a ``checkpoint.pt`` continues from it exactly,
    one with only a ``portable.pt`` (brought from another machine) from its weights; either way
    with its own config (``steps`` may raise the target); ``channels_last`` as :class:`Trainer`
    takes it. Writes ``checkpoint.pt``, ``portable.pt``, ``log.jsonl`` and
    ``samples/step-NNNNNNN.png`` into ``run``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if threads:
        torch.set_num_threads(threads)
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        dev = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                           if device == "auto" else device)
    run = Path(run)
    found = [p for p in (run / CHECKPOINT, run / PORTABLE) if p.is_file()]
    if not found and start is not None:
        found = [Path(start)]
    state = load_checkpoint(found[0], dev) if found else None
    if state is not None:
        cfg = TrainConfig.from_dict(state["config"])
    else:
        cfg = PRESETS[preset]
        cfg = replace(cfg, net=replace(cfg.net, resolution=resolution or cfg.net.resolution),
                      batch=batch or cfg.batch)
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    trainer = Trainer(cfg, dev, rank, world, channels_last)
    if state is not None:
        (trainer.load if "opt_g" in state else trainer.load_portable)(state)
    crops, landmarks = load_faces(shards, cfg.net.resolution, limit)
    held_crops, held_lms = crops[-cfg.holdout:], landmarks[-cfg.holdout:]
    crops, landmarks = crops[:-cfg.holdout], landmarks[:-cfg.holdout]
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(
            {**cfg.as_dict(), "faces": len(crops), "held_out": cfg.holdout,
             "g_parameters": parameter_count(trainer.G),
             "d_parameters": parameter_count(trainer.D)}, indent=2))
    deadline = time.monotonic() + 60 * minutes if minutes else float("inf")
    sums: dict[str, torch.Tensor] = {}  # each loss summed on the device since the last log
    last: dict = {}
    tick = time.monotonic()
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        steps_left = ((cfg, rank, t, crops, landmarks)
                      for t in range(trainer.step_count, cfg.steps))
        for _, batch in in_order(pool, draw_batch, steps_left, 2 * workers):
            if time.monotonic() >= deadline:
                break
            for k, v in trainer.step(batch).items():
                sums[k] = sums.get(k, 0.0) + v
            t = trainer.step_count
            now = time.monotonic()
            trainer.train_seconds += now - tick
            tick = now
            if rank == 0 and t % cfg.log_every == 0:
                last = {"step": t, "train_seconds": round(trainer.train_seconds, 1),
                        **{k: float(v) / cfg.log_every for k, v in sums.items()}}
                with open(run / "log.jsonl", "a") as f:
                    f.write(json.dumps(last) + "\n")
                on_log(last)
                sums = {}
            if rank == 0 and t % cfg.sample_every == 0:
                write_samples(trainer, held_crops, held_lms, run / f"samples/step-{t:07d}.png")
            if rank == 0 and t % cfg.checkpoint_every == 0:
                save_checkpoint(trainer, run)
    if rank == 0:
        save_checkpoint(trainer, run)
        write_samples(trainer, held_crops, held_lms,
                      run / f"samples/step-{trainer.step_count:07d}.png")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {**last, "step": trainer.step_count, "train_seconds": trainer.train_seconds}


def write_samples(trainer: Trainer, crops: np.ndarray, landmarks: np.ndarray, path: Path) -> None:
    grid = sample_grid(trainer.G_ema, crops, landmarks, trainer.device)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def export(checkpoint: Path, folder: Path) -> tuple[Path, dict]:
    """Write the EMA generator of ``checkpoint`` (full or portable) in float16 to
    ``folder/dp68_<S>.pt``
    (``{"config": NetConfig dict, "state": state dict, "step": int}``); return its path and its
    metadata for the manifest. Refuses a generator over :data:`MODELS_FILE_MAX`."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(state["config"])
    weights = {k: v.half() for k, v in state["G_ema"].items()}
    out = Path(folder) / f"dp68_{cfg.net.resolution}.pt"
    save_atomic({"config": cfg.net.as_dict(), "state": weights, "step": state["step"]}, out,
                MODELS_FILE_MAX)
    return out, {**run_metadata(state, cfg),
                 "parameters": sum(v.numel() for v in weights.values()),
                 "net": cfg.net.as_dict()}


def run_metadata(state: dict, cfg: TrainConfig) -> dict:
    """What the manifest records of the run a checkpoint or portable ``state`` comes from."""
    return {
        "resolution": cfg.net.resolution,
        "training_steps": state["step"],
        "training_batch": cfg.batch,
        "training_seconds": round(state["train_seconds"]),
        "hardware": state["hardware"],
    }


def keep_state(portable: Path, folder: Path) -> tuple[Path, dict]:
    """Copy a run's :data:`PORTABLE` state to ``folder/``:data:`KEPT_STATE` (``folder``: the
    models folder), so the next GPU session continues it (:func:`train`'s ``start``); return
    its path and its metadata for the manifest. Refuses a full ``checkpoint.pt`` and anything
    over :data:`MODELS_FILE_MAX`."""
    state = torch.load(portable, map_location="cpu", weights_only=True)
    if "opt_g" in state:
        raise ValueError(f"{portable}: a full checkpoint; keep the run's {PORTABLE}")
    cfg = TrainConfig.from_dict(state["config"])
    out = Path(folder) / KEPT_STATE.format(resolution=cfg.net.resolution)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(state, out, MODELS_FILE_MAX)
    return out, {**run_metadata(state, cfg), "config": cfg.as_dict()}


def load_generator(path: Path, device: torch.device) -> Generator:
    """The exported generator at ``path`` as a float32 module in eval mode on ``device``."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    G = Generator(NetConfig(**data["config"]))
    G.load_state_dict({k: v.float() for k, v in data["state"].items()})
    return G.eval().requires_grad_(False).to(device)


def main(argv: list[str] | None = None) -> None:
    """``python -m fiftyone_faceanon.gan.train`` (and torchrun): the same options as
    ``faceanon train`` without needing click or the detector stack."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="base")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--start-from", type=Path)
    a = ap.parse_args(argv)
    result = train(a.shards, a.run_dir, a.preset, a.steps, a.minutes, a.resolution, a.batch,
                   a.limit, a.device, a.threads, a.channels_last, a.start_from,
                   on_log=lambda r: print(json.dumps(r), flush=True))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
