"""Representation diagnostics: clean-vs-adversarial divergence per layer, t-SNE of z.

Why: ADR's motivation (Bui et al., ECCV 2020, Fig. 1) is that the representations
of a clean input and of its adversarial example drift apart as one goes up the
network, and that ADR's compactness losses pull them back together at the latent
layer. For every stage s of ``model.forward_stages`` this module measures
    D_s = mean |s(x') − s(x)| / mean |s(x)|
(the mean absolute difference normalised by the clean representation's scale,
so layers of different magnitude are comparable), and embeds the latent z of
clean and adversarial examples with t-SNE (van der Maaten & Hinton, 2008) to see
whether adversarial points stay in their class cluster; ``figures`` draws both.
"""

from __future__ import annotations

import torch
from torch import nn

from adrnet.attacks import attack_mode
from adrnet.eval.robust import eval_batches, model_device


@torch.no_grad()
def layer_divergence(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor,
                     batch_size: int = 256) -> dict[str, float]:
    """``{stage: D_s}`` in stage order, for a model with ``forward_stages``."""
    if not hasattr(model, "forward_stages"):
        raise TypeError(f"{type(model).__name__} has no forward_stages(x); cannot compare layers")
    diff_sum: dict[str, float] = {}
    clean_sum: dict[str, float] = {}
    device = model_device(model)
    with attack_mode(model):  # eval mode, every submodule's mode restored after
        for i in range(0, len(x), batch_size):
            clean = model.forward_stages(x[i:i + batch_size].to(device))
            adv = model.forward_stages(x_adv[i:i + batch_size].to(device))
            for name, value in clean.items():
                diff_sum[name] = diff_sum.get(name, 0.0) + float((adv[name] - value).abs().sum())
                clean_sum[name] = clean_sum.get(name, 0.0) + float(value.abs().sum())
    return {name: diff_sum[name] / max(clean_sum[name], 1e-12) for name in diff_sum}


def latents(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Flattened latent z of every example (eval mode), on CPU."""
    return torch.cat(eval_batches(model, x, lambda m, xb: m(xb, return_latent=True)[1].flatten(1), batch_size))


def latent_tsne(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, *,
                seed: int = 0, perplexity: float | None = None) -> dict[str, list]:
    """Joint 2-D t-SNE of clean and adversarial z: ``{"clean", "adv", "labels"}`` lists."""
    from sklearn.manifold import TSNE

    z = torch.cat([latents(model, x), latents(model, x_adv)]).double().numpy()
    n = len(x)
    perplexity = perplexity or float(min(30.0, max(2.0, (2 * n - 1) / 3)))
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    return {"clean": embedding[:n].tolist(), "adv": embedding[n:].tolist(),
            "labels": y.cpu().tolist()}
