"""Train an SAE on streamed activations with sae_lens's training SAEs and `SAETrainer`.

`train_sae(source, out, cfg)`:
- streams rows from a capture folder (or tensor) through the shuffling buffer (`buffer.py`);
- steps sae_lens's `SAETrainer` (its loss, dead-latent bookkeeping, LR schedule, aux losses);
- shows a progress bar (rows/s, loss, L0);
- writes a checkpoint every `cfg.checkpoint_every` steps: `out/checkpoints/step-N/` holds the
  training SAE's weights, the trainer state (optimiser, schedulers, sparsity counters, activation
  scaler) and `state.json`; `out/checkpoints/latest.json` (written atomically, last) names it;
- on a re-run into the same `out`, resumes from the latest checkpoint (refusing other settings or
  other activations) and replays the deterministic data stream past the rows already consumed, so
  an interrupted-and-resumed run ends with the same weights as an uninterrupted one;
- at the end saves the inference SAE in the sae_lens folder format plus lens metadata (`io.py`)
  and removes the checkpoints.

Under `torchrun` / `accelerate launch` (several processes, `lens.distributed`) the run is data-parallel
(`ddp.py`): every rank reads the same shuffled stream, trains on its share of each global batch, and
gradients are averaged by PyTorch DDP, so the weights equal one process's at the same `batch_size` (up to
float rounding). Rank 0 alone takes the folder's lock, writes checkpoints and the final SAE; the others
wait for it. A run may resume with another number of processes (the global batches do not change).

The source may also be a model's forward passes (`stream.py`, `model_source`): no capture folder.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch

from lens.artifacts import load_tensors, read_json, save_tensors, write_json
from lens.errors import LensError
from lens.heap import settle_heap
from lens.outputs import check_output, remove_stale_temps, writer_lock

from .buffer import RowSource, shuffled_batches
from .config import TrainConfig, training_sae


@dataclass
class TrainResult:
    """What a run produced: the saved folder, the loaded dictionary, and the loss log."""

    path: Path
    steps: int
    rows: int
    seconds: float
    resumed_from: int = 0
    log: list[dict] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / max(self.seconds, 1e-9)

    def load(self, model=None):
        from .io import load_sae

        return load_sae(self.path, model=model)


def _trainer(cfg: TrainConfig, sae):
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    tcfg = SAETrainerConfig(
        total_training_samples=cfg.total_steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr, lr_end=cfg.lr if cfg.lr_end is None else cfg.lr_end,
        lr_scheduler_name="constant", lr_warm_up_steps=cfg.lr_warm_up_steps, lr_decay_steps=cfg.lr_decay_steps,
        device=cfg.device, dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=cfg.feature_sampling_window, logger=LoggingConfig(log_to_wandb=False),
    )
    return SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()))


def _estimate_scale(source: RowSource, n_rows: int = 16384) -> float:
    """sqrt(d_in) / mean row norm over the first `n_rows` rows, however the source cuts them into chunks
    (sae_lens's expected_average_only_in)."""
    norms, seen = [], 0
    for chunk in source:
        norms.append(chunk[: n_rows - seen].norm(dim=-1))
        seen += norms[-1].shape[0]
        if seen >= n_rows:
            break
    return float(source.d_in**0.5 / torch.cat(norms).mean())


def _save_checkpoint(out: Path, trainer, step: int, rows: int, cfg: TrainConfig, src: dict, log: list) -> None:
    from .trainer_state import save_trainer_state

    ck = out / "checkpoints" / f"step-{step:07d}"
    ck.mkdir(parents=True, exist_ok=True)
    save_tensors(ck / "training_sae.safetensors", trainer.sae.state_dict(), {"step": step})
    save_trainer_state(trainer, ck)
    write_json(ck / "state.json", {"step": step, "rows": rows, "config": cfg.to_json(), "source": src, "log": log})
    write_json(out / "checkpoints" / "latest.json", {"checkpoint": ck.name, "step": step})
    for old in (out / "checkpoints").glob("step-*"):  # keep only the newest
        if old.name != ck.name:
            shutil.rmtree(old, ignore_errors=True)


def _resume(out: Path, trainer, cfg: TrainConfig, src: dict) -> tuple[int, int, list]:
    import re

    from .trainer_state import load_trainer_state

    latest = out / "checkpoints" / "latest.json"
    if not latest.exists():
        return 0, 0, []
    pointer = read_json(latest, "checkpoint pointer")
    name = pointer.get("checkpoint") if isinstance(pointer, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"step-\d+", name):
        raise LensError(f"checkpoint pointer {latest} names no step-N folder ({name!r}); "
                        f"delete {out / 'checkpoints'} to start the run over")
    ck = out / "checkpoints" / name
    state = read_json(ck / "state.json", "checkpoint state")
    if not isinstance(state, dict) or not {"config", "source", "step", "rows"} <= state.keys():
        raise LensError(f"checkpoint state {ck / 'state.json'} lacks config, source, step or rows; "
                        f"delete {out / 'checkpoints'} to start the run over")
    diff = TrainConfig.from_json(state["config"]).differs(cfg)
    if diff:
        raise LensError(f"{out} holds an interrupted run with other settings ({', '.join(diff)}); "
                        "use another output folder, delete it, or re-run with the same settings")
    if state["source"] != src:
        raise LensError(f"{out} holds an interrupted run on other activations ({state['source']}); "
                        "use another output folder or delete it")
    tensors, _ = load_tensors(ck / "training_sae.safetensors", "SAE checkpoint")
    try:
        trainer.sae.load_state_dict(tensors)
    except RuntimeError as e:
        raise LensError(f"SAE checkpoint {ck} does not fit this run ({str(e).splitlines()[0][:160]}); "
                        f"delete {out / 'checkpoints'} to start the run over") from None
    load_trainer_state(trainer, ck)
    return int(state["step"]), int(state["rows"]), list(state.get("log", []))


def train_sae(
    source,
    out: str | Path,
    cfg: TrainConfig | None = None,
    *,
    site: str | None = None,
    model: dict | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    log_every: int = 20,
    init_decoder: torch.Tensor | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train an SAE on `source` rows and save it to `out` (see module docstring).

    `out` must be new, empty, or an SAE folder (a plain file, a folder of other files, or the source
    capture itself is refused); one writer at a time (a second is refused). A complete SAE with other
    settings is replaced only with `overwrite=True`, keeping the user's other files in the folder.

    source: a capture folder (object or path; `site` picks the site) or a [rows, d_in] tensor.
    model: source model facts to record (default: the capture manifest's).
    stop_after: stop (as if interrupted) after this many steps in total, leaving a checkpoint;
        for tests and for splitting a long run into pieces. A later call resumes.
    init_decoder: [d_sae, d_in] rows to start the decoder from (e.g. data points picked far apart);
        the encoder starts as its transpose. Default: sae_lens's initialisation.
    """
    from lens import distributed

    cfg = (cfg or TrainConfig()).validate()  # the architecture and options against sae_lens's registry
    out = Path(out)
    src_path = Path(source) if isinstance(source, (str, Path)) else getattr(source, "path", None)
    r = distributed.ranks()
    if r.parallel:
        from .ddp import check_parallel

        check_parallel(cfg.architecture, cfg.batch_size, r)
        if cfg.device == "cuda":  # one GPU per process: the launcher's LOCAL_RANK (before nccl's first barrier)
            import os
            from dataclasses import replace

            cfg = replace(cfg, device=f"cuda:{int(os.environ.get('LOCAL_RANK', r.rank))}")
            torch.cuda.set_device(cfg.device)
        r = distributed.init()
    kw = dict(site=site, model=model, resume=resume, progress=progress and r.main, stop_after=stop_after,
              log_every=log_every, init_decoder=init_decoder, overwrite=overwrite, r=r)
    held = ExitStack()  # rank 0: the folder's lock, for the whole training

    def prepare() -> None:
        check_output(out, "sae", overwrite=overwrite, inputs=[src_path] if src_path is not None else [],
                     resumable=True)
        held.enter_context(writer_lock(out, "SAE"))
        remove_stale_temps(out)

    with held:
        if not r.parallel:
            prepare()
            return _train(source, out, cfg, **kw)
        # rank 0 holds the folder (an error there stops every rank); the others train their shares and wait for
        # its writes, resuming from its checkpoints
        distributed.first_on_rank0(prepare)
        try:
            distributed.check_shared(out, "the SAE folder")
            return _train(source, out, cfg, **kw)
        finally:
            distributed.barrier()


def _warn_outliers(source, site: str | None) -> None:
    """Warn (`lens.outliers.OutlierWarning`) when rows of the source (its first 65536) have norms over 10x the
    median, such as the first token's: they dominate the reconstruction loss (capture with `--select from:1`)."""
    from lens.capture_folder import CaptureFolder
    from lens.outliers import NormOutliers, check_capture_folder

    if isinstance(source, (str, Path)):
        source = CaptureFolder(source)
    if isinstance(source, CaptureFolder):
        mon = check_capture_folder(source, site)
        what = f"rows of {source.path} at {site} (the first 65536 read)"
    elif isinstance(source, torch.Tensor):
        mon = NormOutliers()
        mon.update_rows({"rows": source[:65536]})
        what = "training rows (the first 65536 read)"
    else:
        return
    mon.warn(what, stacklevel=5)


def _same_run(out: Path, cfg: TrainConfig, src_id: dict) -> bool:
    """Whether `out`'s interrupted run has these settings and activations (False when unreadable)."""
    try:
        ck = out / "checkpoints" / read_json(out / "checkpoints" / "latest.json", "checkpoint pointer")["checkpoint"]
        state = read_json(ck / "state.json", "checkpoint state")
        return not TrainConfig.from_json(state["config"]).differs(cfg) and state["source"] == src_id
    except (LensError, KeyError, TypeError, ValueError):
        return False


def _step_metrics(o, r) -> dict:
    """Loss, MSE, explained variance and L0 of a step over the whole global batch (summed over ranks)."""
    with torch.no_grad():
        x = o.sae_in.double()  # float64 sums: the variance is a difference of two large sums
        sums = torch.cat([torch.stack([(o.sae_out.double() - x).pow(2).sum(), (o.feature_acts != 0).double().sum(),
                                       x.pow(2).sum(), o.loss.detach().double() * x.shape[0],
                                       torch.tensor(float(x.shape[0]), dtype=x.dtype, device=x.device)]), x.sum(0)])
        if r.parallel:
            import torch.distributed as dist

            dist.all_reduce(sums)
        sq, act, x2, loss, n = (float(v) for v in sums[:5])
        mean = sums[5:]
        var = x2 / n - float(mean.pow(2).sum()) / n**2
    mse = sq / n
    return {"loss": loss / n, "mse": mse, "explained_variance": 1 - mse / max(var, 1e-12), "l0": act / n}


def _train(source, out: Path, cfg: TrainConfig, *, site, model, resume, progress, stop_after, log_every,
           init_decoder, overwrite, r) -> TrainResult:
    from .io import save_sae

    src = RowSource.of(source, site)
    site = site or src.site
    model = model or src.model
    src_id = {"description": src.description, "d_in": src.d_in, "rows": src.n_rows, "site": site,
              "model": (model or {}).get("fingerprint")}
    if (out / "cfg.json").exists() and (out / "lens.json").exists() and not (out / "checkpoints").exists():
        from .io import read_meta

        meta = read_meta(out)
        try:
            same = not TrainConfig.from_json(meta.get("train", {})).differs(cfg)
        except (TypeError, ValueError, LensError):
            same = False  # settings lens cannot read: not these settings
        if meta.get("complete") and same and meta.get("source") == src_id:
            return TrainResult(out, meta["steps"], meta["rows"], 0.0, meta["steps"], meta.get("log", []))
        if not overwrite:
            raise LensError(f"{out} already holds a trained SAE with other settings or activations; pass "
                            "--overwrite to replace it (your other files there are kept) or choose another folder")
    if r.main and overwrite and (out / "checkpoints").exists() and not _same_run(out, cfg, src_id):
        shutil.rmtree(out / "checkpoints")  # an interrupted run of other settings, replaced as asked
    if r.parallel:
        from lens.distributed import barrier

        barrier()  # rank 0 has removed what it replaces before any rank reads checkpoints
    if r.main:
        _warn_outliers(source, site)
    settle_heap()  # lens.heap: buffers of every step reused, not re-faulted
    sae = training_sae(cfg, src.d_in, {"hook_name": site, "model_name": (model or {}).get("spec")})
    if r.parallel:
        from .ddp import check_state

        check_state(sae, cfg.architecture)  # before any checkpoint is read or step taken
    if init_decoder is not None:
        if tuple(init_decoder.shape) != tuple(sae.W_dec.shape):
            raise LensError(f"init_decoder must be {tuple(sae.W_dec.shape)}, got {tuple(init_decoder.shape)}")
        with torch.no_grad():
            rows = init_decoder.float().to(sae.W_dec.device)
            rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            sae.W_dec.copy_(rows * sae.W_dec.norm(dim=-1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec.T / sae.W_dec.norm(dim=-1).pow(2).clamp_min(1e-8)[None, :])
    trainer = _trainer(cfg, sae)
    step, rows, log = _resume(out, trainer, cfg, src_id) if resume else (0, 0, [])
    if r.parallel:
        from . import ddp

        ddp.attach(trainer, cfg.device)
    resumed_from = step
    if step == 0 and cfg.normalize == "expected_average_only_in":
        trainer.activation_scaler.scaling_factor = _estimate_scale(src)
    trainer.n_training_steps, trainer.n_training_samples = step, rows
    batches = islice(shuffled_batches(src, cfg.batch_size, cfg.buffer_rows, cfg.seed), step, None)
    end = cfg.total_steps if stop_after is None else min(cfg.total_steps, stop_after)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.total_steps * cfg.batch_size, initial=rows, unit="row", desc=f"train {cfg.architecture}",
                   leave=False)
    t0 = time.perf_counter()
    while step < end:
        trainer.maybe_reset_sparsity()
        batch = next(batches)
        if r.parallel:
            batch, before = ddp.share(batch, r), ddp.stats_before(trainer)
        o = trainer.step(batch.to(cfg.device))  # the buffer lives on the host; the SAE on cfg.device
        if r.parallel:
            ddp.sync_stats(trainer, before)
        step += 1
        rows += cfg.batch_size
        trainer.n_training_steps, trainer.n_training_samples = step, rows
        if step % log_every == 0 or step == end:
            m = _step_metrics(o, r)
            log.append({"step": step, **m})
            if bar is not None:
                bar.set_postfix(loss=f"{m['loss']:.4g}", ev=f"{m['explained_variance']:.3f}", l0=f"{m['l0']:.1f}")
        if bar is not None:
            bar.update(cfg.batch_size)
        if r.main and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
            _save_checkpoint(out, trainer, step, rows, cfg, src_id, log)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    if r.parallel:
        ddp.detach(trainer)
    if step < cfg.total_steps:  # stopped early on request: leave a checkpoint to resume from
        if r.main:
            _save_checkpoint(out, trainer, step, rows, cfg, src_id, log)
        return TrainResult(out, step, rows, seconds, resumed_from, log)
    if not r.main:
        return TrainResult(out, step, rows, seconds, resumed_from, log)
    if trainer.activation_scaler.scaling_factor is not None:
        trainer.sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    save_sae(trainer.sae, out, site=site, model=model, extra={
        "train": cfg.to_json(), "source": src_id, "steps": step, "rows": rows, "log": log, "complete": True,
        "train_seconds": seconds, "sparsity_log10": None,
    }, sparsity=trainer.log_feature_sparsity)  # one atomic step; the checkpoints go with the old folder
    return TrainResult(out, step, rows, seconds, resumed_from, log)
