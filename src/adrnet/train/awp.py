"""Adversarial weight perturbation (AWP; Wu, Xia and Wang, "Adversarial Weight
Perturbation Helps Robust Generalization", NeurIPS 2020) for any objective.

Why: AWP flattens the robust loss landscape in weight space. Each training step
(against an L∞/L2 PGD or TRADES adversary, whatever the objective uses) becomes:
1. craft the step's adversarial examples as usual (unperturbed weights);
2. one ascent step on the objective's loss, on those same examples, gives a
   direction g_l per layer l; the perturbation is v_l = γ ‖w_l‖ g_l / ‖g_l‖, so
   ‖v_l‖ / ‖w_l‖ = γ in every layer (layer-wise relative size, as in the paper);
3. add v, compute the objective's loss and take the optimiser step at w + v;
4. subtract v again (the reference's order: step first, then restore).
As in the authors' code (github.com/csdongxian/AWP), only weights with more than
one dimension are perturbed (conv and linear kernels; no biases, no BatchNorm
affine parameters), and BatchNorm running statistics are not changed by the
ascent pass (the reference runs it on a proxy copy; here they are saved and put
back). The ascent pass draws its dropout masks from the step's RNG, which is then
set back to where the plain step would be, so with γ = 0 a step is bit-identical
to a step without AWP. Under DDP the ascent gradient is averaged over ranks, so
every rank applies the same v and the replicas stay identical. Nothing is stored:
v is recomputed from (weights, batch, seed), which keeps resume bit-identical.
"""

from __future__ import annotations

import torch

from adrnet.device import autocast_context

#: Added to ‖g_l‖ so that a layer without gradient gets v_l = 0 (the reference's EPS).
NORM_EPS = 1e-20


def awp_due(cfg, epoch: int) -> bool:
    """AWP is configured and its warm-up (``optim.awp.warmup_epochs``) is over."""
    awp = cfg.optim.awp
    return awp is not None and epoch >= awp.warmup_epochs


class ReusedAttack:
    """The step's attack, run once: later calls return the same adversarial batch.

    It also records the RNG state right after the attack, the point where a step
    without AWP would continue drawing (dropout of the descent pass)."""

    def __init__(self, attack, device: torch.device):
        self.attack, self.device = attack, device
        self.x_adv, self.rng_after = None, None

    def __call__(self, model, x, y):
        if self.x_adv is None:
            self.x_adv = self.attack(model, x, y)
            self.rng_after = rng_state(self.device)
        return self.x_adv


def rng_state(device: torch.device) -> tuple:
    """The CPU generator's state, and the CUDA one of ``device`` when it is a GPU."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def set_rng_state(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[1], device)


def perturbed_weights(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters AWP perturbs: trainable weights with more than one dimension."""
    return [p for p in net.parameters() if p.requires_grad and p.dim() > 1]


def _ascent_gradients(run, objective, xb, yb, attack, params) -> list[torch.Tensor]:
    """∇ of the objective's loss at the current weights (BatchNorm statistics kept),
    averaged over ranks under DDP."""
    buffers = [b.detach().clone() for b in run.net.buffers()]
    with autocast_context(run.device, run.cfg.train.precision):
        loss = objective(run.net, xb, yb, attack, gather=run.gather)["loss"]
    scale = run.scaler.get_scale() if run.scaler.is_enabled() else 1.0  # fp16: no underflow
    grads = torch.autograd.grad(loss * scale, params, allow_unused=True)
    with torch.no_grad():
        for buffer, saved in zip(run.net.buffers(), buffers):
            buffer.copy_(saved)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    if run.info.distributed:
        from adrnet.train.distributed import all_reduce_sum
        flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
        grads = [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads)]
    return grads


class Perturbation:
    """v per perturbed weight; ``add`` it, then ``remove`` it after the optimiser step
    (w + v − lr·g − v, as in the reference) or ``undo`` it exactly when no step was
    taken (a failed step leaves the weights bit for bit as they were)."""

    def __init__(self, pairs: list):
        self.pairs = pairs
        self.saved = [param.detach().clone() for param, _ in pairs]

    @torch.no_grad()
    def add(self) -> None:
        for param, v in self.pairs:
            param.add_(v)

    @torch.no_grad()
    def remove(self) -> None:
        for param, v in self.pairs:
            param.sub_(v)

    @torch.no_grad()
    def undo(self) -> None:
        for (param, _), saved in zip(self.pairs, self.saved):
            param.copy_(saved)


def weight_perturbation(run, objective, xb, yb, attack: ReusedAttack, gamma: float) -> Perturbation:
    """v_l = γ ‖w_l‖ g_l / (‖g_l‖ + NORM_EPS) for each perturbed weight (not yet added);
    the RNG is left where a step without AWP would be after its attack."""
    started = rng_state(run.device)
    params = perturbed_weights(run.net)
    grads = _ascent_gradients(run, objective, xb, yb, attack, params)
    set_rng_state(run.device, attack.rng_after if attack.rng_after is not None else started)
    with torch.no_grad():
        return Perturbation([(p, g * (gamma * p.norm() / (g.norm() + NORM_EPS)))
                             for p, g in zip(params, grads)])
