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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from adrnet.atomic import output_file, read_bounded, write_json_atomic
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


#: Bounds of Square's budget: a million queries per restart is 200 times AutoAttack's
#: (5000), and each query is a forward pass of every point not yet broken; more is a typo.
SQUARE_MAX_QUERIES, SQUARE_MAX_RESTARTS = 10**6, 1000


def _budget(value, name: str, bound: int) -> int:
    """A Square budget (queries or restarts): a whole number from 1 to ``bound``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
        raise ConfigError(f"Square's {name} must be a whole number from 1 to {bound}, got {value!r}")
    return value


def _settings(norm, eps, version, attacks, seed, square_queries, dim, square_restarts=None) -> dict:
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
    if square_queries is not None:
        _budget(square_queries, "queries", SQUARE_MAX_QUERIES)
    settings = {"norm": norm, "eps": float(eps), "version": version,
                "attacks": list(attacks) if attacks else None, "seed": int(seed),
                "square_queries": square_queries}
    if square_restarts is not None:  # absent when not given: earlier state files still match
        settings["square_restarts"] = _budget(square_restarts, "restarts", SQUARE_MAX_RESTARTS)
    return settings


def build_autoattack(model: nn.Module, settings: dict, device: torch.device):
    """A configured ``pyautoattack.AutoAttack`` with a quiet, collecting logger."""
    from pyautoattack import AutoAttack

    custom = settings["version"] == "custom"
    adversary = AutoAttack(model, norm=AA_NORMS[settings["norm"]], eps=settings["eps"],
                           version=settings["version"], device=device, seed=settings["seed"],
                           attacks=settings["attacks"] if custom else None)
    if settings["square_queries"] is not None:
        adversary.square.n_queries = int(settings["square_queries"])
    if settings.get("square_restarts") is not None:
        adversary.square.n_restarts = int(settings["square_restarts"])
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


#: The fields of a state file. ``seconds`` and ``digest`` are absent from files written
#: before adrnet kept them, ``bf16_only`` from fp32 evaluations.
STATE_FIELDS = ("fingerprint", "robust", "attacked", "accuracy_after", "seconds", "bf16_only", "digest")


def state_limit(n: int, attacks: int) -> int:
    """The most bytes a state file of ``n`` examples and ``attacks`` attacks can hold: an
    example takes at most ``"false, "`` (7 bytes) in ``robust`` and in each attack's
    ``attacked`` list, and the other fields well under 4 KiB. A larger file is none."""
    return 4096 + 8 * n * (1 + attacks)


def state_digest(state: dict) -> str:
    """SHA-256 of a state's fields other than ``digest``, as canonical JSON.

    Why: a file changed by anything but this module's writer (a disk error, an editor,
    a script that does not recompute it) is refused. It is a checksum, not a signature:
    whoever can write the file can recompute it, which is why every field is also
    checked against the evaluation (:func:`state_problem`)."""
    body = {key: value for key, value in state.items() if key != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _save_state(path: Path, state: dict) -> None:
    write_json_atomic(path, {**state, "digest": state_digest(state)}, indent=None)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is no number a state file holds")


def _load_state(path: Path | None, fingerprint: str, clean_correct: torch.Tensor,
                attacks: list[str], bf16: bool) -> dict:
    """The saved progress of this evaluation, or a fresh state (no file, or none given).

    A state file is read only when it is a regular file no larger than any state of
    this evaluation can be (a FIFO would block, /dev/zero never end), and believed only
    when every field passes :func:`state_problem`; else it is refused, saying why."""
    fresh = {"fingerprint": fingerprint, "robust": clean_correct.tolist(), "attacked": {},
             "accuracy_after": {}, "seconds": 0.0}
    if path is None:
        return fresh
    data = read_bounded(path, state_limit(len(clean_correct), len(attacks)),
                        "progress file of AutoAttack (--aa-state)", ConfigError)
    if data is None:
        return fresh
    try:
        state = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"AutoAttack state file {path} is unreadable ({exc}); delete it to "
                          "start over") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} is not an AutoAttack state file (it holds a "
                          f"{type(state).__name__}, not an object); delete it or choose another path")
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(f"AutoAttack state file {path} belongs to another evaluation "
                          "(other model weights, inputs, ε, norm or attacks); delete it or choose another path")
    problem = state_problem(state, clean_correct, attacks, bf16)
    if problem is not None:
        raise ConfigError(f"AutoAttack state file {path} is damaged: {problem}; its progress "
                          "cannot be trusted: delete it to start over")
    state.pop("digest", None)
    state.setdefault("seconds", 0.0)  # absent from states saved before the time was kept
    return state


def _flags_problem(value, n: int, name: str) -> str | None:
    if not isinstance(value, list) or len(value) != n or not all(isinstance(v, bool) for v in value):
        return f"{name} must be a list of {n} true/false flags (one an example)"
    return None


def _table_problem(value, attacks: list[str], name: str, check) -> str | None:
    if not isinstance(value, dict):
        return f"{name} must be an object keyed by attack name"
    foreign = [key for key in value if key not in attacks]
    if foreign:
        return f"{name} names {foreign}, which this evaluation does not run ({', '.join(attacks)})"
    return next((f"{name}[{key!r}]: {why}" for key, entry in value.items()
                 if (why := check(entry)) is not None), None)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _field_problem(state: dict, n: int, attacks: list[str], bf16: bool) -> str | None:
    """What is wrong with the names, types, lengths or ranges of a state's fields, or None."""
    unknown = [key for key in state if key not in STATE_FIELDS]
    if unknown:
        return f"unknown field(s) {unknown}"
    missing = [key for key in ("robust", "attacked", "accuracy_after") if key not in state]
    if missing:
        return f"field(s) {missing} are missing"
    if "digest" in state and state["digest"] != state_digest(state):
        return "its fields do not match the digest adrnet wrote with them (the file was changed since)"
    seconds, bf16_only = state.get("seconds", 0.0), state.get("bf16_only", 0)
    problems = (
        _flags_problem(state["robust"], n, "robust"),
        _table_problem(state["attacked"], attacks, "attacked",
                       lambda flags: _flags_problem(flags, n, "it")),
        _table_problem(state["accuracy_after"], attacks, "accuracy_after",
                       lambda v: None if _is_number(v) and 0 <= v <= 1 else f"{v!r} is no number from 0 to 1"),
        None if _is_number(seconds) and seconds >= 0 else
        f"seconds must be a finite number >= 0, got {seconds!r}",
        "bf16_only belongs to bf16 evaluations, and this one is fp32" if "bf16_only" in state and not bf16
        else None,
        None if isinstance(bf16_only, int) and not isinstance(bf16_only, bool) and bf16_only >= 0
        else f"bf16_only must be a whole number >= 0, got {bf16_only!r}",
    )
    return next((problem for problem in problems if problem is not None), None)


def state_problem(state: dict, clean_correct: torch.Tensor, attacks: list[str],
                  bf16: bool) -> str | None:
    """Why a state file of this evaluation (its fingerprint matches) cannot be believed,
    or None. Every field is checked against the evaluation, and the flags against the
    clean predictions computed in this process and against how attacks write them:

    - an example is robust only if it is clean-correct now (no attack makes an example
      robust), and only clean-correct examples are ever attacked;
    - attacks run in order, each on the examples still robust, so an example attacked
      by one was attacked by every earlier one, an attack starts only after the earlier
      ones finished (``accuracy_after`` names exactly those that finished), and a
      finished attack attacked every example still robust;
    - an example counted broken was attacked, and the attack that broke it is the last
      one that attacked it, so each ``accuracy_after`` follows from the flags and must
      equal them; ``bf16_only`` counts attacked points, so it is at most their number.

    What remains trusted: a state whose fields were all changed together so as to keep
    these rules and its digest (only deliberate editing does that) is believed for the
    examples it marks as attacked, which are not attacked again."""
    n = len(clean_correct)
    problem = _field_problem(state, n, attacks, bf16)
    if problem is not None:
        return problem
    clean = clean_correct.cpu().bool()
    robust = torch.tensor(state["robust"], dtype=torch.bool).reshape(n)
    done = torch.tensor([state["attacked"].get(a, [False] * n) for a in attacks],
                        dtype=torch.bool).reshape(len(attacks), n)

    def first(mask: torch.Tensor) -> str:
        return f"{int(mask.sum())} example(s) (the first: #{int(mask.nonzero()[0])})"
    if (robust & ~clean).any():
        return (f"it counts {first(robust & ~clean)} robust that the model misclassifies "
                "without any attack (predicted again now); no attack can make an example robust")
    if (done & ~clean).any():
        return ("it marks as attacked examples the model misclassifies without any attack "
                "(only clean-correct ones are attacked)")
    for k in range(1, len(attacks)):
        if (done[k] & ~done[k - 1]).any():
            return (f"{first(done[k] & ~done[k - 1])}, attacked by {attacks[k]} but not by "
                    f"{attacks[k - 1]}, which runs before it")
    finished = [a for a in attacks if a in state["accuracy_after"]]
    if finished != attacks[:len(finished)]:
        return f"accuracy_after says {finished} finished, but attacks run in the order {attacks}"
    started = [k for k in range(len(attacks)) if done[k].any()]
    if started and started[-1] > len(finished):
        return (f"{attacks[started[-1]]} has started, but {attacks[len(finished)]}, which runs "
                "before it, has not finished")
    for k, attack in enumerate(finished):
        if (robust & ~done[k]).any():
            return (f"it counts {first(robust & ~done[k])} robust that {attack}, which finished, "
                    "never attacked")
    broken = clean & ~robust
    if (broken & ~done.any(0)).any():
        return f"it counts {first(broken & ~done.any(0))} broken that no attack ran on"
    breaker = done.sum(0) - 1  # the last attack run on an example broke it
    for k, attack in enumerate(finished):
        after = int((robust | (broken & (breaker > k))).sum())
        if abs(state["accuracy_after"][attack] * n - after) > 0.25:
            return (f"accuracy_after[{attack!r}] is {state['accuracy_after'][attack]}, but its "
                    f"flags leave {after} of {n} examples robust after it")
    if state.get("bf16_only", 0) > int(done.sum()):
        return f"bf16_only is {state['bf16_only']}, more than the {int(done.sum())} points attacked"
    return None


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
            _save_state(path, state)
    # An attack finished in an earlier call keeps the accuracy it left: ``robust`` may
    # since hold later attacks' results too.
    state["accuracy_after"].setdefault(attack, float(robust.float().mean()))


def autoattack_eval(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str = "linf",
                    eps: float, version: str = "standard", attacks: list[str] | None = None,
                    device: str | torch.device = "cpu", seed: int = 0, batch_size: int = 128,
                    state_path: str | Path | None = None, square_queries: int | None = None,
                    progress: bool = False, judge: nn.Module | None = None,
                    square_restarts: int | None = None) -> AutoAttackResult:
    """Run AutoAttack on (x, y); resumes from ``state_path`` when it exists.

    ``version="standard"`` runs APGD-CE, APGD-T, FAB-T and Square as published;
    ``version="custom"`` with ``attacks=[...]`` runs a chosen list. The model is
    moved to ``device`` and put in eval mode for the run (its mode is restored).
    With ``judge`` (the fp32 model, when ``model`` is its bf16 copy), the attacks run on
    ``model`` but clean correctness and every break are decided by ``judge``; the points
    that fool ``model`` only are counted (``AutoAttackResult.bf16_only``).
    ``square_queries`` and ``square_restarts`` set Square's budget (the package's: 5000
    queries, 1 restart). ``warnings`` holds the package's own reliability checks and
    that of :func:`square_flag`, which the package cannot make here (see there).
    """
    settings = _settings(norm, eps, version, attacks, seed, square_queries, x[0].numel(),
                         square_restarts)
    if judge is not None:  # its own state file: never resumed from an fp32 run's, or the reverse
        settings["precision"] = "bf16"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("AutoAttack was asked to run on CUDA but no CUDA device is available; use device='cpu'")
    path = output_file(state_path) if state_path is not None else None  # never a pipe or device
    referee = model.to(device) if judge is None else judge.to(device)  # decides what is correct
    with attack_mode(model.to(device)), attack_mode(referee):  # eval mode, modes restored
        clean_correct = predict(referee, x, batch_size).eq(y.cpu())
        fingerprint = _fingerprint(model, x, y, settings)
        judge = as_image(judge, x)[0] if judge is not None else None
        model, x = as_image(model, x)
        adversary = build_autoattack(model, settings, device)
        _limit_targets(adversary, num_outputs(model, x[:1]), list(adversary.attacks_to_run))
        state = _load_state(path, fingerprint, clean_correct, list(adversary.attacks_to_run),
                            bf16=judge is not None)
        resumed_seconds = state["seconds"]
        for attack in list(adversary.attacks_to_run):
            _run_attack(adversary, model, attack, x, y, state, batch_size=batch_size,
                        device=device, path=path, progress=progress, judge=judge)
        if path is not None:
            _save_state(path, state)
    return AutoAttackResult(robust=torch.tensor(state["robust"], dtype=torch.bool),
                            clean_correct=clean_correct, accuracy_after=state["accuracy_after"],
                            settings={**settings, "device": str(device)},
                            warnings=autoattack_flags(adversary.logger.handlers[0].messages,
                                                      state["accuracy_after"]),
                            resumed_seconds=resumed_seconds, bf16_only=state.get("bf16_only", 0))


def autoattack_settings(norm: str, eps: float, *, version: str = "standard",
                        attacks: list[str] | None = None, seed: int = 0,
                        square_queries: int | None = None, square_restarts: int | None = None) -> dict:
    """The validated settings :func:`autoattack_batch` takes (refused as :func:`autoattack_eval` refuses them)."""
    return _settings(norm, eps, version, attacks, seed, square_queries, None, square_restarts)


def autoattack_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, settings: dict) -> torch.Tensor:
    """AutoAttack's points for one batch, on ``x``'s device: each attack of the ensemble
    runs on the examples still classified correctly; an example keeps the point that
    broke it, the others stay x. The model is in eval mode for the call (modes restored)."""
    _settings(settings["norm"], settings["eps"], settings["version"], settings["attacks"],
              settings["seed"], settings["square_queries"], x[0].numel(), settings.get("square_restarts"))
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


# ---- AutoAttack's own verdict on its reliability ----

#: How every Square flag begins (pyautoattack's wording), so that a flag is never shown twice.
SQUARE_FLAG_START = "Square Attack has decreased the robust accuracy of"
#: pyautoattack's threshold (``checks.check_square_sr``): Square, run after the gradient
#: attacks, may lower the robust accuracy by at most this before the evaluation is flagged.
SQUARE_FLAG_MARGIN = 0.002
#: Accuracies are float32 means: a drop of exactly the margin (1 image in 500) must not
#: flag through rounding.
_ROUNDING = 1e-6


def _accuracies(accuracy_after) -> dict[str, float]:
    """``accuracy_after`` as {attack: accuracy}; {} when it is not that (a damaged record)."""
    if not isinstance(accuracy_after, dict):
        return {}
    valid = all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and 0 <= v <= 1 for k, v in accuracy_after.items())
    return dict(accuracy_after) if valid else {}


def square_flag(accuracy_after) -> str | None:
    """AutoAttack's warning that Square, a black-box attack, broke points the gradient
    attacks before it missed (a sign of gradient masking), or None.

    Why here: the package checks this once, over the accuracies after every attack of
    one ``run_standard_evaluation`` call; adrnet calls it one attack at a time (for its
    resumable state), so the package's check never fires. This is the same rule on
    ``accuracy_after`` (each attack's cumulative robust accuracy, in the order they ran):
    Square's accuracy below the lowest of the others by more than
    :data:`SQUARE_FLAG_MARGIN`. Square run alone, or before other attacks, is never flagged.
    """
    after = _accuracies(accuracy_after)
    others = {attack: value for attack, value in after.items() if attack != "square"}
    if "square" not in after or not others:
        return None
    before = min(others.values())
    drop = before - after["square"]
    if drop <= SQUARE_FLAG_MARGIN + _ROUNDING:
        return None
    return (f"{SQUARE_FLAG_START} {drop:.2%} ({before:.2%} after {', '.join(others)}, "
            f"{after['square']:.2%} after square). This might indicate that the robustness "
            "evaluation using AutoAttack is unreliable: a black-box attack broke points the "
            "gradient attacks missed. Follow-up: a stronger Square in the same evaluation, "
            "adrnet eval RUN --attacks autoattack,square --square-queries Q --square-restarts R "
            "(docs/evaluation.md)")


def autoattack_flags(warnings, accuracy_after) -> list[str]:
    """Every reliability flag of one AutoAttack evaluation: the package's warnings as
    recorded (texts only: a damaged record's other entries are ignored) and the Square
    flag recomputed from ``accuracy_after``, so that an ``eval.json`` written before
    adrnet made that check shows it too; each once."""
    flags = list(dict.fromkeys(w for w in warnings if isinstance(w, str))) \
        if isinstance(warnings, list) else []
    square = square_flag(accuracy_after)
    if square is not None and not any(f.startswith(SQUARE_FLAG_START) for f in flags):
        flags.append(square)
    return flags
