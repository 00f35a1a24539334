"""PCA of UV albedo maps with missing texels.

Each photo sees only part of the head, so every sample comes with a per-texel weight
in [0, 1] (0 = not seen). `weighted_pca` is the EM algorithm for weighted low-rank
approximation (Srebro & Jaakkola 2003; with 0/1 weights it is Roweis' EM-PCA with
missing data): texels are filled from the current rank-K reconstruction in proportion
to how little they are trusted, Y = W*X + (1-W)*(mean + Z U), then the mean and the
K-dimensional subspace are re-estimated from Y (one block power iteration per EM
step). The objective sum W (X - mean - Z U)^2 never increases.

`fill.mirror_fill` first copies confident texels onto their unseen mirror texels (a
face seen from the side still gives both cheeks), at a reduced weight.

Shapes: X (N, P, C) samples (P texels, C colour channels), W (N, P) weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .normalise import MODES, normalise_gains, weighted_mean

_CHUNK = 128  # rows processed at once: bounds temporaries to _CHUNK x D floats


@dataclass
class PCAResult:
    mean: np.ndarray  # (P, C)
    components: np.ndarray  # (K, P, C) orthonormal (as flat vectors)
    variances: np.ndarray  # (K,) variance of the samples along each component
    total_variance: float  # variance of the completed samples, summed over all D = P*C entries
    coverage: np.ndarray  # (P,) summed weight per texel (0 = never seen)
    coeffs: np.ndarray  # (N, K) coefficients of the completed samples
    iterations: int
    objective: list  # weighted squared residual per iteration
    gains: np.ndarray | None = None  # (N, C) fitted per-sample gains (1 when gains="none")

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.variances, 0))

    @property
    def explained_ratio(self) -> np.ndarray:
        return self.variances / max(self.total_variance, 1e-30)


def weighted_pca(X: np.ndarray, W: np.ndarray, K: int, *, gains: str = "none", iterations: int = 100,
                 tol: float = 1e-5, seed: int = 0, overrelax: float = 1.8, progress=None) -> PCAResult:
    """Mean and top-K principal components of samples X with per-texel weights W.

    gains: "exposure" or "white-balance" fits each sample's unknown gain (one, or one per
    channel) jointly: X_n ~ g_n * (mean + U z_n) with U orthogonal to the mean's
    (per-channel) directions, gains with geometric mean 1 (see normalise.py).
    Texels no sample sees are left out of the computation (mean: the global mean there,
    components: 0).
    """
    X = np.asarray(X, np.float32)
    W = np.clip(np.asarray(W, np.float32), 0.0, 1.0)
    N, P, C = X.shape
    if W.shape != (N, P):
        raise ValueError(f"weights must have shape {(N, P)}, got {W.shape}")
    seen = W.sum(0, dtype=np.float64) > 1e-6
    if seen.all() or not seen.any():
        return _em_pca(X, W, K, gains, iterations, tol, seed, overrelax, progress)
    part = _em_pca(X[:, seen], W[:, seen], K, gains, iterations, tol, seed, overrelax, progress)
    mean = np.empty((P, C), np.float32)
    mean[seen], mean[~seen] = part.mean, part.mean.mean(0)
    components = np.zeros((len(part.components), P, C), np.float32)
    components[:, seen] = part.components
    coverage = np.zeros(P, np.float32)
    coverage[seen] = part.coverage
    part.mean, part.components, part.coverage = mean, components, coverage
    return part


def _em_pca(X, W, K, gains, iterations, tol, seed, overrelax, progress) -> PCAResult:
    if gains not in MODES:
        raise ValueError(f"gains must be one of {MODES}, got {gains!r}")
    N, P, C = X.shape
    K = int(min(K, N - 1, P * C))
    if K < 1:
        raise ValueError(f"need at least 2 samples for a PCA, got {N}")
    D = P * C
    Xn, g = normalise_gains(X, W, gains)  # a start: gains against the mean alone
    mean, coverage = weighted_mean(Xn, W)
    Xraw = X.reshape(N, D)
    Wf = np.repeat(W, C, axis=1)  # (N, D): one weight per texel for all channels
    seen_entry = np.repeat(coverage > 1e-6, C)
    # Y = completed samples; starts with unseen entries at the mean.
    Y = Wf * Xn.reshape(N, D) + (1 - Wf) * mean.reshape(1, D)
    del Xn
    mu = mean.reshape(D).astype(np.float32)
    rng = np.random.default_rng(seed)
    U = _orthonormal_rows(rng.standard_normal((K, D)).astype(np.float32))
    for _ in range(4):  # a good start: the top-K subspace of the mean-filled data
        U = _exclude(_orthonormal_rows(_centred_T_dot(Y, mu, _centred_dot(Y, mu, U))), mu, gains, C)
    history = []
    omega, rose, scale = 1.0, False, np.ones(C)
    it = 0
    for it in range(1, iterations + 1):
        # M-step: one block power iteration on the completed data, U <- orth(Yc^T Yc U^T).
        U = _exclude(_orthonormal_rows(_centred_T_dot(Y, mu, _centred_dot(Y, mu, U))), mu, gains, C)
        Z = _centred_dot(Y, mu, U)
        # E-step: refit each sample's gain to its reconstruction, refill the untrusted part
        # from the reconstruction, over-relaxed (Y <- Y_em + (omega - 1)(Y_em - Y)); omega
        # falls back to 1 whenever the objective rose.
        objective = 0.0
        omega = 1.0 if rose else min(overrelax, omega + 0.2)
        raw_gains = np.ones((N, C))
        for rows in _row_chunks(N):
            recon = mu + Z[rows] @ U
            if gains != "none":
                raw_gains[rows] = _fit_gains(Xraw[rows], Wf[rows], recon, gains, C)
                g[rows] = raw_gains[rows] / scale
            x = Xraw[rows] / np.tile(g[rows], P).astype(np.float32)
            residual = x - recon
            objective += float(np.sum(Wf[rows] * residual * residual, dtype=np.float64))
            y_em = recon + Wf[rows] * residual
            Y[rows] = y_em + (omega - 1.0) * (y_em - Y[rows]) if omega != 1.0 else y_em
        scale = np.exp(np.log(raw_gains).mean(0))  # next round's gains: geometric mean 1
        mu = Y.mean(0, dtype=np.float64).astype(np.float32)
        rose = bool(history) and objective > history[-1]
        history.append(objective)
        if progress:
            progress(it, iterations, objective)
        if it > 2 and 0 <= history[-2] - objective <= tol * max(history[-2], 1e-30):
            break
    Z = _centred_dot(Y, mu, U)
    # Rotate the subspace onto principal axes of the completed data.
    _, s, Vt = np.linalg.svd(Z - Z.mean(0), full_matrices=False)
    U = (Vt @ U).astype(np.float32)
    U[:, ~seen_entry] = 0.0  # never observed: no variation there
    Z = _centred_dot(Y, mu, U)
    total = sum(float(np.sum((Y[r] - mu) ** 2, dtype=np.float64)) for r in _row_chunks(N)) / max(N - 1, 1)
    # Fix the sign of every component so that results are reproducible: largest entry positive.
    signs = np.sign(U[np.arange(K), np.abs(U).argmax(1)])
    U *= signs[:, None]
    Z *= signs[None]
    return PCAResult(mean=mu.reshape(P, C), components=U.reshape(K, P, C), variances=(s ** 2 / max(N - 1, 1)),
                     total_variance=total, coverage=coverage, coeffs=Z, iterations=it, objective=history,
                     gains=g.astype(np.float32))


def _fit_gains(x, w, recon, mode, C):
    """Least-squares gain of each sample (rows of flat (n, P*C) arrays) against recon."""
    n = len(x)
    num = (w * x * recon).reshape(n, -1, C).sum(1, dtype=np.float64)
    den = (w * recon * recon).reshape(n, -1, C).sum(1, dtype=np.float64)
    if mode == "exposure":
        num, den = num.sum(1, keepdims=True), den.sum(1, keepdims=True)
    out = np.where(den > 1e-9, num / np.maximum(den, 1e-12), 1.0)
    return np.broadcast_to(np.clip(out, 1e-3, None), (n, C))


def _exclude(U, mu, gains, C):
    """U without the directions a gain can produce (the mean, per channel), orthonormal."""
    if gains == "none":
        return U
    if gains == "exposure":
        M = mu[None]
    else:
        M = np.stack([np.where(np.arange(mu.size) % C == c, mu, 0.0) for c in range(C)])
    M = _orthonormal_rows(M.astype(np.float64)).astype(np.float32)
    return _orthonormal_rows(U - (U @ M.T) @ M)


def project(mean: np.ndarray, components: np.ndarray, x: np.ndarray, w: np.ndarray | None = None,
            std: np.ndarray | None = None, prior: float = 0.0) -> np.ndarray:
    """Coefficients (K,) of a sample x (P, C) by weighted least squares on weights w (P,).

    With std and prior > 0 the coefficients get a Gaussian prior prior * sum (z/std)^2.
    """
    K = components.shape[0]
    A = components.reshape(K, -1).T  # (D, K)
    r = (x - mean).reshape(-1)
    wf = np.ones_like(r) if w is None else np.repeat(np.asarray(w, np.float32), x.shape[-1])
    AtW = A.T * wf
    lhs = AtW @ A
    if std is not None and prior > 0:
        lhs = lhs + prior * np.diag(1.0 / np.maximum(np.asarray(std[:K], np.float64), 1e-12) ** 2)
    return np.linalg.solve(lhs + 1e-9 * np.eye(K), AtW @ r)


def reconstruct(mean: np.ndarray, components: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    return mean + np.tensordot(coeffs, components[: len(coeffs)], axes=1)


def principal_angles(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the row spaces of A (k, D) and B (l, D)."""
    Qa = _orthonormal_rows(np.asarray(A, np.float64).reshape(len(A), -1))
    Qb = _orthonormal_rows(np.asarray(B, np.float64).reshape(len(B), -1))
    s = np.linalg.svd(Qa @ Qb.T, compute_uv=False)
    return np.arccos(np.clip(s, -1.0, 1.0))


# ----------------------------------------------------------------------------- helpers


def _row_chunks(N: int):
    for start in range(0, N, _CHUNK):
        yield slice(start, min(N, start + _CHUNK))


def _centred_dot(Y, mu, U):
    """(Y - mu) @ U.T without materialising Y - mu."""
    return Y @ U.T - (mu @ U.T)[None]


def _centred_T_dot(Y, mu, Z):
    """(Y - mu).T @ Z, as (K, D) rows."""
    return (Z.T @ Y) - np.outer(Z.sum(0), mu)


def _orthonormal_rows(A: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(A.T)
    return q.T.astype(A.dtype)
