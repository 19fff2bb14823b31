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
from typing import NamedTuple, Optional

import torch
from torch import nn


class StepTables(NamedTuple):
    """Per-call constants of one step for evaluating many candidates (see QincoStep.corrections)."""
    t0: torch.Tensor
    t1: Optional[torch.Tensor]
    x_weight: torch.Tensor
    block_in: list
    block_out: list
    out_weight: Optional[torch.Tensor]
    codebook: torch.Tensor
    dtype: torch.dtype


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
    def candidate_tables(self, dtype=torch.float32):
        """Everything candidate evaluation needs, in `dtype`: the per-codeword parts of the first
        two matmuls ((K, de) and (K, hidden) tables, computed in float32) and the weights."""
        de = self.embed
        c = self.codebook
        u = self.in_proj(c) if self.in_proj is not None else c
        t0 = u + u @ self.concat.weight[:, :de].T + self.concat.bias
        t1 = t0 @ self.blocks[0][0].weight.T if self.L else None
        cast = (lambda t: None if t is None else t.to(dtype)) if dtype != torch.float32 else (lambda t: t)
        return StepTables(
            t0=cast(t0), t1=cast(t1), x_weight=self.concat.weight[:, de:].T,
            block_in=[cast(b[0].weight.T) for b in self.blocks], block_out=[cast(b[2].weight.T) for b in self.blocks],
            out_weight=cast(self.out_proj.weight.T) if self.out_proj is not None else None,
            codebook=c, dtype=dtype)

    def corrections(self, tables, xhat, idx=None):
        """f for candidate codewords of each hypothesis, as float32.

        xhat: (..., dim) partial reconstructions; idx: (..., A) candidate codes, or None for all K.
        Returns (..., A or K, dim). With bfloat16 tables the candidate network runs in bfloat16.
        """
        tb = tables
        x_term = xhat @ tb.x_weight                                      # (..., de), float32
        low = x_term.to(tb.dtype)
        z = (tb.t0 if idx is None else tb.t0[idx]) + low.unsqueeze(-2)   # (..., K or A, de)
        for i, (w_in, w_out) in enumerate(zip(tb.block_in, tb.block_out)):
            if i == 0:
                pre = (tb.t1 if idx is None else tb.t1[idx]) + (x_term @ w_in.float()).to(tb.dtype).unsqueeze(-2)
            else:
                pre = z @ w_in
            z = z + torch.relu(pre) @ w_out
        if tb.out_weight is None:
            return z.float()
        c = tb.codebook if idx is None else tb.codebook[idx]
        return c + (z @ tb.out_weight).float()

    def flops_per_candidate(self):
        """Multiply-adds for one candidate with split tables (for benchmarks)."""
        de, h = self.embed, self.hidden
        macs = h * de + max(self.L - 1, 0) * 2 * de * h + (de * self.dim if self.out_proj is not None else 0)
        return macs
