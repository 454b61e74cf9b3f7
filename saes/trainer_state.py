"""Save and restore the state of sae_lens's `SAETrainer` as safetensors + JSON, never through pickle.

It is the state that `SAETrainer.save_trainer_state` / `load_trainer_state` keep (there in a pickled
`trainer_state.pt`, read with `torch.load`): the Adam optimizer, the LR scheduler, the coefficient
schedulers, the sparsity counters (`act_freq_scores`, `n_forward_passes_since_fired`,
`n_frac_active_samples`), the step and sample counters, `started_fine_tuning`, and the activation
scaler (scaling factor and whitening). In a checkpoint folder it is `trainer_state.json` (written last)
and `trainer_state.safetensors`, both written by `lens.statefile`.
"""

from __future__ import annotations

from pathlib import Path

from lens.errors import LensError
from lens.statefile import read_state, write_state

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"


def save_trainer_state(trainer, folder: str | Path) -> None:
    """Write `trainer`'s state to `folder` (see module docstring)."""
    scaler = trainer.activation_scaler
    w = scaler.whitening
    whitening = None if w is None else {"mean": w.mean, "matrix": w.matrix, "inverse_matrix": w.inverse_matrix}
    state = {
        "optimizer": trainer.optimizer.state_dict(),
        "lr_scheduler": trainer.lr_scheduler.state_dict(),
        "coefficient_schedulers": {n: s.state_dict() for n, s in trainer.coefficient_schedulers.items()},
        "n_training_samples": trainer.n_training_samples,
        "n_training_steps": trainer.n_training_steps,
        "act_freq_scores": trainer.act_freq_scores,
        "n_forward_passes_since_fired": trainer.n_forward_passes_since_fired,
        "n_frac_active_samples": trainer.n_frac_active_samples,
        "started_fine_tuning": trainer.started_fine_tuning,
        "activation_scaler": {
            "scaling_factor": scaler.scaling_factor,
            "whitening": whitening,
        },
    }
    write_state(Path(folder) / STATE_JSON, state, STATE_TENSORS, kind="sae-trainer-state")


def load_trainer_state(trainer, folder: str | Path) -> None:
    """Restore `trainer`'s state from `folder`; a missing, damaged or mismatched state raises a LensError."""
    from sae_lens.training.activation_scaler import ActivationWhitening

    folder = Path(folder)
    path = folder / STATE_JSON
    if not path.exists() and (folder / "trainer_state.pt").exists():
        raise LensError(f"checkpoint {folder} holds a pickled trainer_state.pt, which lens never loads; "
                        f"delete {folder.parent} to start the run over")
    state = read_state(path, "SAE trainer state")
    device = trainer.cfg.device
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
        schedulers = state["coefficient_schedulers"]
        if set(schedulers) != set(trainer.coefficient_schedulers):
            raise ValueError(f"coefficient schedulers {sorted(schedulers)} vs {sorted(trainer.coefficient_schedulers)}")
        for name, sd in schedulers.items():
            trainer.coefficient_schedulers[name].load_state_dict(sd)
        d_sae = trainer.act_freq_scores.shape
        act, since = state["act_freq_scores"], state["n_forward_passes_since_fired"]
        if act.shape != d_sae or since.shape != d_sae:
            raise ValueError(f"sparsity counters of shape {tuple(act.shape)}, expected {tuple(d_sae)}")
        trainer.act_freq_scores = act.to(device)
        trainer.n_forward_passes_since_fired = since.to(device)
        trainer.n_frac_active_samples = int(state["n_frac_active_samples"])
        trainer.n_training_samples = int(state["n_training_samples"])
        trainer.n_training_steps = int(state["n_training_steps"])
        trainer.started_fine_tuning = bool(state["started_fine_tuning"])
        scaler = state["activation_scaler"]
        factor, w = scaler["scaling_factor"], scaler["whitening"]
        trainer.activation_scaler.scaling_factor = None if factor is None else float(factor)
        trainer.activation_scaler.whitening = None if w is None else ActivationWhitening(
            mean=w["mean"], matrix=w["matrix"], inverse_matrix=w["inverse_matrix"])
    except LensError:
        raise
    except Exception as e:  # torch and sae_lens raise several types for a state of another run
        why = (str(e).splitlines() or [""])[0][:160]
        raise LensError(f"SAE trainer state {path} does not fit this run ({type(e).__name__}: {why}); "
                        f"delete {folder.parent} to start the run over") from None
