"""One QINCo step: the network f_m(c, x̂) that turns codeword c into a correction of the
partial reconstruction x̂, for both architectures.

QINCo1 (Huijben et al. 2024):   z = c + W_cat·[c; x̂] + b;   z += W2·ReLU(W1·z) (L times);   f = z
QINCo2 (Vallaeys et al. 2025):  u = W_in·c;  u += W_cat·[u; x̂] + b;  u += W2·ReLU(W1·u);  f = c + W_out·u

W_cat, the last layer of every block and (QINCo2) W_out start at zero, so an untrained step returns
its codeword and an untrained model is exactly the residual quantizer it was initialised from.

Encoding evaluates f for many codewords per vector. Because [c; x̂] enters W_cat linearly and the
first block's W1 acts on a still-linear sum, both split into a per-codeword table (K rows, computed
once per call) plus a per-vector term: each candidate then costs a broadcast add instead of two
matmuls (`candidate_tables`, `corrections`).
"""
import torch
from torch import nn


class QincoStep(nn.Module):
    """Codebook, optional pre-selection codebook, and the step network of one QINCo step."""

    def __init__(self, arch, dim, K, L, hidden, embed=0, preselect=False):
        super().__init__()
        if arch not in ("qinco1", "qinco2"):
            raise ValueError(f"unknown architecture {arch!r}")
        self.arch, self.dim, self.K, self.L, self.hidden = arch, dim, K, L, hidden
        self.embed = dim if arch == "qinco1" or not embed else embed
        de = self.embed
        self.codebook = nn.Parameter(torch.zeros(K, dim))
        self.preselect = nn.Parameter(torch.zeros(K, dim)) if preselect else None
        self.in_proj = nn.Linear(dim, de, bias=False) if arch == "qinco2" and de != dim else None
        self.out_proj = nn.Linear(de, dim, bias=False) if arch == "qinco2" else None
        self.concat = nn.Linear(de + dim, de, bias=True)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(de, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, de, bias=False))
            for _ in range(L))
        self._zero_init()

    def _zero_init(self):
        """Start as the identity on the codeword (f(c, x̂) = c): the RQ solution."""
        nn.init.zeros_(self.concat.weight)
        nn.init.zeros_(self.concat.bias)
        for block in self.blocks:
            nn.init.zeros_(block[2].weight)
        if self.out_proj is not None:
            nn.init.zeros_(self.out_proj.weight)

    # ---- plain reference forward (training, and the reference the fast path must match) ----
    def forward(self, codes, xhat):
        """f(C[codes], x̂) for one code per row: codes (N,) int64, xhat (N, dim) -> (N, dim)."""
        c = self.codebook[codes]
        u = self.in_proj(c) if self.in_proj is not None else c
        z = u + self.concat(torch.cat([u, xhat], dim=-1))
        for block in self.blocks:
            z = z + block(z)
        return z if self.out_proj is None else c + self.out_proj(z)

    # ---- split-layer evaluation of many candidates (encoding and fast decoding) ----
    def candidate_tables(self):
        """Per-codeword parts of the first two matmuls: (K, de) and (K, hidden) tables."""
        de = self.embed
        c = self.codebook
        u = self.in_proj(c) if self.in_proj is not None else c
        t0 = u + u @ self.concat.weight[:, :de].T + self.concat.bias
        t1 = t0 @ self.blocks[0][0].weight.T if self.L else None
        return t0, t1

    def corrections(self, tables, xhat, idx=None):
        """f for candidate codewords of each hypothesis.

        xhat: (..., dim) partial reconstructions; idx: (..., A) candidate codes, or None for all K.
        Returns (..., A or K, dim).
        """
        t0, t1 = tables
        de = self.embed
        x_term = xhat @ self.concat.weight[:, de:].T                     # (..., de)
        if idx is None:
            z = t0 + x_term.unsqueeze(-2)                                # (..., K, de)
        else:
            z = t0[idx] + x_term.unsqueeze(-2)
        for i, block in enumerate(self.blocks):
            if i == 0:
                h0 = x_term @ block[0].weight.T
                pre = (t1 if idx is None else t1[idx]) + h0.unsqueeze(-2)
            else:
                pre = z @ block[0].weight.T
            z = z + torch.relu(pre) @ block[2].weight.T
        if self.out_proj is None:
            return z
        c = self.codebook if idx is None else self.codebook[idx]
        return c + z @ self.out_proj.weight.T

    def flops_per_candidate(self):
        """Multiply-adds for one candidate with split tables (for benchmarks)."""
        de, h = self.embed, self.hidden
        macs = h * de + max(self.L - 1, 0) * 2 * de * h + (de * self.dim if self.out_proj is not None else 0)
        return macs
