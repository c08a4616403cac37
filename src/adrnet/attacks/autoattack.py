"""AutoAttack (Croce & Hein, ICML 2020) through the authors' package `pyautoattack`.

Why: AutoAttack's parameter-free ensemble (APGD-CE, APGD-T, FAB-T, Square) is
the reference L∞/L2 robustness evaluation, and the paper evaluates with it.
This adapter adds what `adrnet eval` needs around the package:
- an explicit device (default CPU, never an implicit CUDA);
- per-example robust flags, so AutoAttack joins adrnet's per-example worst case;
- resumability. pyautoattack 0.2.0's own state file cannot resume: it writes the
  attack set as ``str(set)``, so every reload fails its "different set of attacks"
  check, and a restored run reads ``y_adv`` before assigning it. The adapter
  therefore drives the package one attack and one batch at a time and records
  progress in its own JSON state file (atomic writes) after every batch.
:func:`autoattack_batch` is the same attack as a plain ``attack(model, x, y) -> x_adv``
on one batch (no state file), for callers that want the points.
Threat models: L∞, L2 (and L1) balls around x, inside [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from adrnet.atomic import write_json_atomic
from adrnet.attacks.inference import num_outputs, predict
from adrnet.attacks.pgd import attack_mode
from adrnet.attacks.threats import make_threat
from adrnet.errors import ConfigError

AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
AA_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
AA_VERSIONS = ("standard", "plus", "rand", "custom")


@dataclass(frozen=True)
class AutoAttackResult:
    """Per-example robust flags after AutoAttack, and accuracy after each attack."""

    robust: torch.Tensor
    clean_correct: torch.Tensor
    accuracy_after: dict[str, float]
    settings: dict
    warnings: list[str] = field(default_factory=list)
    #: attack time of the batches that earlier, interrupted calls saved (0 for a fresh run);
    #: an evaluation adds it to its own wall time, so a resumed run reports its whole cost
    resumed_seconds: float = 0.0
    #: points that fooled the bf16 copy but not the fp32 judge (counted robust); 0 in fp32
    bf16_only: int = 0

    @property
    def accuracy(self) -> float:
        return float(self.robust.float().mean())


class _Collect(logging.Handler):
    """Keeps the package's warnings (its own masking checks) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() not in self.messages:
            self.messages.append(record.getMessage())


def _settings(norm, eps, version, attacks, seed, square_queries, dim) -> dict:
    if norm not in AA_NORMS:
        raise ConfigError(f"AutoAttack norm must be one of {', '.join(AA_NORMS)}, got {norm!r}")
    make_threat(norm, eps, dim)
    if version not in AA_VERSIONS:
        raise ConfigError(f"AutoAttack version must be one of {', '.join(AA_VERSIONS)}, got {version!r}")
    if (attacks is None) != (version != "custom"):
        raise ConfigError("give an attack list exactly when version='custom' "
                          f"(choose from {', '.join(AA_ATTACKS)})")
    unknown = [a for a in attacks or [] if a not in AA_ATTACKS]
    if unknown or attacks == []:
        raise ConfigError(f"unknown AutoAttack attack(s) {unknown}; choose from {', '.join(AA_ATTACKS)}")
    return {"norm": norm, "eps": float(eps), "version": version,
            "attacks": list(attacks) if attacks else None, "seed": int(seed),
            "square_queries": square_queries}


def build_autoattack(model: nn.Module, settings: dict, device: torch.device):
    """A configured ``pyautoattack.AutoAttack`` with a quiet, collecting logger."""
    from pyautoattack import AutoAttack

    custom = settings["version"] == "custom"
    adversary = AutoAttack(model, norm=AA_NORMS[settings["norm"]], eps=settings["eps"],
                           version=settings["version"], device=device, seed=settings["seed"],
                           attacks=settings["attacks"] if custom else None)
    if settings["square_queries"] is not None:
        adversary.square.n_queries = int(settings["square_queries"])
    adversary.logger = logging.getLogger(f"adrnet.autoattack.{id(adversary)}")
    adversary.logger.propagate = False
    adversary.logger.handlers = [_Collect()]
    return adversary


class _AsImage(nn.Module):
    """Shows feature vectors [N, D] to the package as images [N, 1, 1, D] (Square needs NCHW)."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.shape = model, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(len(x), *self.shape))


def as_image(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """(model, x) unchanged for NCHW images, else wrapped and reshaped to [N, 1, 1, D]."""
    if x.dim() == 4:
        return model, x
    return _AsImage(model, tuple(x.shape[1:])).eval(), x.reshape(len(x), 1, 1, -1)


def _limit_targets(adversary, num_classes: int, attacks: list[str]) -> None:
    """At most C−1 target classes (the package assumes 10); the DLR losses index the
    3rd (apgd-dlr) and 4th (apgd-t) largest logit, so they need C ≥ 3 and C ≥ 4."""
    minimum = {"apgd-dlr": 3, "apgd-t": 4}
    too_few = [a for a in attacks if num_classes < minimum.get(a, 2)]
    if too_few:
        raise ConfigError(f"AutoAttack's {', '.join(too_few)} need(s) more classes (DLR loss) than this "
                          f"model's {num_classes}: use --aa-version custom --aa-attacks apgd-ce,fab,square")
    adversary.apgd_targeted.n_target_classes = min(adversary.apgd_targeted.n_target_classes, num_classes - 1)
    adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, num_classes - 1)


def _fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict) -> str:
    """Digest of everything the state file's flags depend on: weights, data, settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(x.detach().cpu().float().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load_state(path: Path | None, fingerprint: str, clean_correct: torch.Tensor) -> dict:
    fresh = {"fingerprint": fingerprint, "robust": clean_correct.tolist(), "attacked": {},
             "accuracy_after": {}, "seconds": 0.0}
    if path is None or not path.exists():
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"AutoAttack state file {path} is unreadable ({exc}); delete it to start over") from exc
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(f"AutoAttack state file {path} belongs to another evaluation "
                          "(other model weights, inputs, ε, norm or attacks); delete it or choose another path")
    state.setdefault("seconds", 0.0)  # absent from states saved before the time was kept
    return state


def _attack_batch(adversary, attack, xb, yb, device):
    adversary.attacks_to_run = [attack]
    with torch.random.fork_rng(devices=[]):  # the package reseeds the global RNG
        x_adv, _ = adversary.run_standard_evaluation(xb.to(device), yb.to(device),
                                                     batch_size=len(xb))
    return x_adv.detach()


def _run_attack(adversary, model, attack, x, y, state, *, batch_size, device, path, progress,
                judge=None):
    robust = torch.tensor(state["robust"], dtype=torch.bool)
    attacked = torch.tensor(state["attacked"].setdefault(attack, [False] * len(x)), dtype=torch.bool)
    todo = (robust & ~attacked).nonzero().flatten()
    for start in tqdm(range(0, len(todo), batch_size), desc=f"autoattack {attack}",
                      disable=not progress, leave=False):
        started = time.perf_counter()
        batch = todo[start:start + batch_size]
        x_adv = _attack_batch(adversary, attack, x[batch], y[batch], device)
        holds = predict(model if judge is None else judge, x_adv, batch_size).eq(y[batch].cpu())
        if judge is not None:  # a point that fools only the bf16 model is no break
            fools_fast = predict(model, x_adv, batch_size).ne(y[batch].cpu())
            state["bf16_only"] = state.get("bf16_only", 0) + int((fools_fast & holds).sum())
        robust[batch] &= holds
        attacked[batch] = True
        state["robust"], state["attacked"][attack] = robust.tolist(), attacked.tolist()
        state["seconds"] += time.perf_counter() - started
        if start + batch_size >= len(todo):  # saved with the attack's last batch: a resume
            state["accuracy_after"][attack] = float(robust.float().mean())  # must not redo it
        if path is not None:
            write_json_atomic(path, state, indent=None)
    # An attack finished in an earlier call keeps the accuracy it left: ``robust`` may
    # since hold later attacks' results too.
    state["accuracy_after"].setdefault(attack, float(robust.float().mean()))


def autoattack_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                    eps: float, version: str = "standard", attacks: list[str] | None = None,
                    device: str | torch.device = "cpu", seed: int = 0, batch_size: int = 128,
                    state_path: str | Path | None = None, square_queries: int | None = None,
                    progress: bool = False, judge: nn.Module | None = None) -> AutoAttackResult:
    """Run AutoAttack on (x, y); resumes from ``state_path`` when it exists.

    ``version="standard"`` runs APGD-CE, APGD-T, FAB-T and Square as published;
    ``version="custom"`` with ``attacks=[...]`` runs a chosen list. The model is
    moved to ``device`` and put in eval mode for the run (its mode is restored).
    With ``judge`` (the fp32 model, when ``model`` is its bf16 copy), the attacks run on
    ``model`` but clean correctness and every break are decided by ``judge``; the points
    that fool ``model`` only are counted (``AutoAttackResult.bf16_only``).
    """
    settings = _settings(norm, eps, version, attacks, seed, square_queries, x[0].numel())
    if judge is not None:  # its own state file: never resumed from an fp32 run's, or the reverse
        settings["precision"] = "bf16"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("AutoAttack was asked to run on CUDA but no CUDA device is available; use device='cpu'")
    path = Path(state_path) if state_path is not None else None
    referee = model.to(device) if judge is None else judge.to(device)  # decides what is correct
    with attack_mode(model.to(device)), attack_mode(referee):  # eval mode, modes restored
        clean_correct = predict(referee, x, batch_size).eq(y.cpu())
        fingerprint = _fingerprint(model, x, y, settings)
        judge = as_image(judge, x)[0] if judge is not None else None
        model, x = as_image(model, x)
        adversary = build_autoattack(model, settings, device)
        _limit_targets(adversary, num_outputs(model, x[:1]), list(adversary.attacks_to_run))
        state = _load_state(path, fingerprint, clean_correct)
        resumed_seconds = state["seconds"]
        for attack in list(adversary.attacks_to_run):
            _run_attack(adversary, model, attack, x, y, state, batch_size=batch_size,
                        device=device, path=path, progress=progress, judge=judge)
        if path is not None:
            write_json_atomic(path, state, indent=None)
    return AutoAttackResult(robust=torch.tensor(state["robust"], dtype=torch.bool),
                            clean_correct=clean_correct, accuracy_after=state["accuracy_after"],
                            settings={**settings, "device": str(device)},
                            warnings=adversary.logger.handlers[0].messages,
                            resumed_seconds=resumed_seconds, bf16_only=state.get("bf16_only", 0))


def autoattack_settings(norm: str, eps: float, *, version: str = "standard",
                        attacks: list[str] | None = None, seed: int = 0,
                        square_queries: int | None = None) -> dict:
    """The validated settings :func:`autoattack_batch` takes (refused as :func:`autoattack_eval` refuses them)."""
    return _settings(norm, eps, version, attacks, seed, square_queries, None)


def autoattack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: dict) -> torch.Tensor:
    """AutoAttack's points for one batch, on ``x``'s device: each attack of the ensemble
    runs on the examples still classified correctly; an example keeps the point that
    broke it, the others stay x. The model is in eval mode for the call (modes restored)."""
    _settings(settings["norm"], settings["eps"], settings["version"], settings["attacks"],
              settings["seed"], settings["square_queries"], x[0].numel())
    device = x.device
    with attack_mode(model):
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        shown, images = as_image(model, x)
        adversary = build_autoattack(shown, settings, device)
        _limit_targets(adversary, num_outputs(shown, images[:1]), list(adversary.attacks_to_run))
        x_adv = images.clone()
        for attack in list(adversary.attacks_to_run):
            index = robust.nonzero().flatten()
            if len(index) == 0:
                break
            found = _attack_batch(adversary, attack, images[index], y[index], device)
            with torch.no_grad():
                broken = shown(found).argmax(1) != y[index]
            x_adv[index[broken]] = found[broken]
            robust[index[broken]] = False
    return x_adv.reshape(x.shape)
