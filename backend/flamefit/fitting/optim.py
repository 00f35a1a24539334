"""Optimisers: Levenberg-Marquardt for the small landmark problems, Adam for the
photometric stage.

Both are a few lines here rather than torch.optim: constructing any torch.optim
optimiser imports torch._dynamo (~1.5 s per process, a tenth of a whole fit).
"""

from __future__ import annotations

import math

import torch


def levenberg_marquardt(residuals, theta0: torch.Tensor, iterations: int, reporter=None, history: list | None = None,
                        before_iteration=None, jacobian=None) -> torch.Tensor:
    """Minimise 0.5 |r(theta)|^2. residuals: (B, P) -> (B, R), batched; theta0: (P,) float64.

    Jacobians are forward differences from one batched call of P + 1 points; steps are
    damped with Marquardt's diagonal scaling. `before_iteration(theta)` may fix
    discrete choices (e.g. the jaw-line row) for the iteration. `jacobian(theta, r, h)`:
    the same (P, R) forward differences computed another way (a block-sparse problem).
    Returns the best theta.
    """
    theta = theta0.detach().clone()
    P = theta.shape[0]
    if before_iteration is not None:
        before_iteration(theta)
    with torch.no_grad():
        r = residuals(theta[None])[0]
        cost = 0.5 * float(r @ r)
        lam = 1e-3
        eye = torch.eye(P, dtype=theta.dtype, device=theta.device)
        for it in range(iterations):
            if before_iteration is not None:
                before_iteration(theta)
                r = residuals(theta[None])[0]
                cost = 0.5 * float(r @ r)
            h = 1e-6 * (1.0 + theta.abs())
            if jacobian is None:
                J = (residuals(theta[None] + torch.diag(h)) - r[None]) / h[:, None]  # (P, R)
            else:
                J = jacobian(theta, r, h)
            A = J @ J.t()
            g = J @ r
            D = A.diagonal().clamp(min=1e-12)
            improved = False
            for _ in range(8):
                delta = torch.linalg.solve(A + lam * torch.diag(D) + 1e-12 * eye, -g)
                trial = theta + delta
                r_trial = residuals(trial[None])[0]
                cost_trial = 0.5 * float(r_trial @ r_trial)
                if math.isfinite(cost_trial) and cost_trial < cost:
                    improved = True
                    decrease = cost - cost_trial
                    theta, r, cost = trial, r_trial, cost_trial
                    lam = max(lam / 3.0, 1e-9)
                    break
                lam = min(lam * 4.0, 1e9)
            if history is not None:
                history.append(cost)
            if reporter is not None:
                reporter.step(it + 1, iterations, cost)
            if not improved or decrease < 1e-9 * max(cost, 1e-12):
                if reporter is not None and it + 1 < iterations:
                    reporter.step(iterations, iterations, cost)
                break
    return theta


class Adam:
    """torch.optim.Adam's update (no weight decay, no amsgrad), per-group learning rates."""

    def __init__(self, groups: list[dict], betas=(0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [dict(g) for g in groups]
        self.betas, self.eps = betas, eps
        self.t = 0
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in groups for p in g["params"]}

    def zero_grad(self) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                m, v = self.state[id(p)]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-g["lr"])
