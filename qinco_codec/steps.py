"""One QINCo step: the network f_m(c, x̂) that turns codeword c into a correction of the
partial reconstruction x̂, for both architectures (their tensors, shapes, costs and the candidate
buffer's layout are defined in `architecture.py`; this module evaluates them).

QINCo1 (Huijben et al. 2024):   z = c + W_cat·[c; x̂] + b;   z += W2·ReLU(W1·z) (L times);   f = z
QINCo2 (Vallaeys et al. 2025):  u = W_in·c;  u += W_cat·[u; x̂] + b;  u += W2·ReLU(W1·u);  f = c + W_out·u

W_cat, the last layer of every block and (QINCo2) W_out start at zero, so an untrained step returns
its codeword and an untrained model is exactly the residual quantizer it was initialised from.

Encoding evaluates f for many codewords per vector. Because [c; x̂] enters W_cat linearly and the
first block's W1 acts on a still-linear sum, both split into a per-codeword table (K rows, computed
once per call) plus a per-vector term: each candidate then costs a broadcast add instead of two
matmuls (`candidate_tables`, `corrections`). The float32 hot paths, `candidate_residuals` (encoding:
all candidates of a chunk in one cache-line-aligned buffer, updated in place by matmuls that
accumulate into it) and `decode_step` (decoding), compute the same network; `corrections` is the
plain split-layer version (bfloat16, and a reference in tests).
"""
from typing import NamedTuple, Optional

import torch
from torch import nn

from .architecture import CandidateLayout, StepShape, expands_error, gathers_cr


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
    combined: Optional[torch.Tensor] = None   # float32: [t0 | t1 | codebook or 2·W_outᵀc (QINCo2)], (K, width)
    layout: Optional[CandidateLayout] = None   # where t1 and the last part start in combined
    gram: Optional[torch.Tensor] = None        # expanded error: W_outᵀ W_out, (de, de)
    c_sq: Optional[torch.Tensor] = None        # expanded error: ‖c_k‖², (K,)

    @property
    def expanded(self):
        """Whether candidates are scored by the expanded error (`candidate_errors`)."""
        return self.gram is not None


class Workspace:
    """Reusable float buffers for `QincoStep.candidate_residuals`, by name: one flat tensor per
    name, grown when needed, viewed at the requested shape (saves allocating and page-faulting
    megabytes of fresh memory for every chunk and step)."""

    def __init__(self):
        self._bufs = {}

    def get(self, name, shape, like):
        numel = 1
        for s in shape:
            numel *= s
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel or buf.device != like.device:
            buf = torch.empty(numel, dtype=torch.float32, device=like.device)
            self._bufs[name] = buf
        return buf[:numel].view(shape)


class QincoStep(nn.Module):
    """Codebook, optional pre-selection codebook, and the step network of one QINCo step."""

    def __init__(self, shape: StepShape, preselect=True):
        """shape: the step's dimensions (`architecture.StepShape`); preselect=False leaves out the
        pre-selection codebook of a variant that has one (a decode-only model)."""
        super().__init__()
        self.shape = shape
        self.arch, self.dim, self.K, self.L, self.hidden, self.embed = (
            shape.arch, shape.D, shape.K, shape.L, shape.h, shape.de)
        D, de = shape.D, shape.de
        self.codebook = nn.Parameter(torch.zeros(shape.K, D))
        self.preselect = nn.Parameter(torch.zeros(shape.K, D)) if shape.preselect and preselect else None
        self.in_proj = nn.Linear(D, de, bias=False) if shape.in_proj else None
        self.out_proj = nn.Linear(de, D, bias=False) if shape.out_proj else None
        self.concat = nn.Linear(de + D, de, bias=True)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(de, shape.h, bias=False), nn.ReLU(), nn.Linear(shape.h, de, bias=False))
            for _ in range(shape.L))
        self._zero_init()

    def _zero_init(self):
        """Start as the identity on the codeword (f(c, x̂) = c): the RQ solution."""
        nn.init.zeros_(self.concat.weight)
        nn.init.zeros_(self.concat.bias)
        for block in self.blocks:
            nn.init.zeros_(block[2].weight)
        if self.out_proj is not None:
            nn.init.zeros_(self.out_proj.weight)

    def is_identity(self):
        """Whether the step's correction is exactly its codeword (W_out = 0: an untrained QINCo2
        step, or a codebooks-only model), so that it encodes as residual quantization."""
        return self.out_proj is not None and not bool(self.out_proj.weight.any())

    # ---- plain reference forward (training, and the reference the fast path must match) ----
    def forward(self, codes, xhat):
        """f(C[codes], x̂) for one code per row: codes (N,) int64, xhat (N, dim) -> (N, dim)."""
        c = self.codebook[codes]
        u = self.in_proj(c) if self.in_proj is not None else c
        z = u + self.concat(torch.cat([u, xhat], dim=-1))
        for block in self.blocks:
            z = z + block(z)   # Linear, ReLU (where training's dropout hooks in), Linear
        return z if self.out_proj is None else c + self.out_proj(z)

    # ---- split-layer evaluation of many candidates (encoding and fast decoding) ----
    def first_layer_table(self):
        """The per-codeword part of the first layer, (K, de): u + W_cat[:, :de]·u + b with u the
        (projected) codeword. Every evaluation of many candidates starts from it."""
        c = self.codebook
        u = self.in_proj(c) if self.in_proj is not None else c
        return u + u @ self.concat.weight[:, :self.embed].T + self.concat.bias

    def _weights(self, cast):
        """The StepTables fields every evaluation needs (weights transposed for right-multiplying)."""
        return dict(
            x_weight=self.concat.weight[:, self.embed:].T,
            block_in=[cast(b[0].weight.T) for b in self.blocks], block_out=[cast(b[2].weight.T) for b in self.blocks],
            out_weight=cast(self.out_proj.weight.T) if self.out_proj is not None else None,
            codebook=self.codebook)

    def candidate_tables(self, dtype=torch.float32, expanded=None):
        """Everything candidate evaluation needs, in `dtype`: the per-codeword parts of the first
        two matmuls ((K, de) and (K, hidden) tables, computed in float32) and the weights.
        expanded: score candidates by the expanded error (`candidate_errors`); None lets the
        architecture decide (`architecture.expands_error`), float32 only."""
        t0 = self.first_layer_table()
        t1 = t0 @ self.blocks[0][0].weight.T if self.L else None
        cast = (lambda t: None if t is None else t.to(dtype)) if dtype != torch.float32 else (lambda t: t)
        combined = layout = gram = c_sq = None
        if dtype == torch.float32:
            expanded = expands_error(self.shape) if expanded is None else bool(expanded and self.out_proj is not None)
            # [t0 | t1 | c or 2·W_outᵀc] with each part starting on a 64-byte boundary (zero padding
            # between): matmuls on row slices of the candidate buffer then run on aligned rows
            layout = CandidateLayout.of(self.shape, expanded)
            de, h = self.embed, self.hidden
            combined = torch.zeros(self.K, layout.width, dtype=torch.float32, device=t0.device)
            combined[:, :de] = t0
            if t1 is not None:
                combined[:, layout.p_off:layout.p_off + h] = t1
            if expanded:
                w_out = self.out_proj.weight                               # (D, de)
                combined[:, layout.e_off:layout.e_off + de] = 2.0 * (self.codebook @ w_out)
                gram = w_out.T @ w_out                                     # (de, de)
                c_sq = (self.codebook * self.codebook).sum(1)              # (K,)
            elif self.out_proj is not None:
                combined[:, layout.e_off:layout.e_off + self.dim] = self.codebook
        return StepTables(t0=cast(t0), t1=cast(t1), dtype=dtype, combined=combined, layout=layout,
                          gram=gram, c_sq=c_sq, **self._weights(cast))

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

    # ---- fused float32 kernels (encoding and decoding hot paths) ----
    def _evaluate_candidates(self, tb, xhat, idx, workspace, tail=None, before_last=None):
        """The step network for every candidate, in place in one buffer G (R, C, W) = [z | p | t]
        (see CandidateLayout): G is filled by one broadcast add (or gather and add) of the
        per-codeword tables [t0 | t1 | ·] and the per-hypothesis terms [W_x x̂ | W1 W_x x̂ | ·],
        whose last part `tail(hv[:, e_off:])` writes; then every block is one matmul into its
        slice, `before_last(z)` running before the last accumulation. Nothing of size (R, C, ·)
        is allocated. Returns (G, z (R, C, de), z as (R·C, de))."""
        ws = workspace if workspace is not None else Workspace()
        R = xhat.shape[0]
        C = self.K if idx is None else idx.shape[-1]
        de, h, L = self.embed, self.hidden, len(tb.block_in)
        W, p_off, e_off = tb.layout.width, tb.layout.p_off, tb.layout.e_off
        hv = ws.get("hv", (R, W), xhat)            # per-hypothesis terms (padding left unset)
        x_term = torch.mm(xhat, tb.x_weight, out=hv[:, :de])             # (R, de)
        if L:
            torch.mm(x_term, tb.block_in[0], out=hv[:, p_off:p_off + h])  # (R, h)
        if tail is not None:
            tail(hv[:, e_off:])
        G = ws.get("G", (R, C, W), xhat)
        if idx is None:
            torch.add(tb.combined.unsqueeze(0), hv.unsqueeze(1), out=G)   # (R, K, W)
        else:
            torch.index_select(tb.combined, 0, idx.reshape(-1), out=G.view(R * C, W))
            G.add_(hv.unsqueeze(1))
        G2 = G.view(R * C, W)
        z, z2 = G[:, :, :de], G2[:, :de]
        if L:
            p2 = G2[:, p_off:p_off + h]
        for i, (w_in, w_out) in enumerate(zip(tb.block_in, tb.block_out)):
            if i:
                torch.mm(z2, w_in, out=p2)
            p2.relu_()
            if before_last is not None and i == L - 1:
                before_last(z)
            z2.addmm_(p2, w_out)
        if before_last is not None and L == 0:
            before_last(z)
        return G, z, z2

    def candidate_residuals(self, tables, xhat, r, idx=None, workspace=None):
        """e = f(c, x̂) − r for candidate codewords of each hypothesis, float32 (R, C, dim).

        xhat, r: (R, dim) partial reconstructions and residuals x − x̂ (one row per hypothesis);
        idx: (R, A) candidate codes, or None for all K (C = A or K). ‖e‖² is the squared error a
        candidate leaves and x + e the new reconstruction x̂ + f. The same network as `corrections`,
        evaluated in place in one (R·C, de + h [+ dim], padded) buffer G = [z | p | e]: a single broadcast
        add (or gather and add) of the per-codeword tables [t0 | t1 | c] and the per-hypothesis
        terms [W_x x̂ | W1 W_x x̂ | −r] fills the first two matmuls' results and (QINCo2) c − r;
        every remaining layer is one matmul accumulating into its slice of G (QINCo1 subtracts r
        from z before the last accumulation). Nothing of size (R, C, ·) is allocated.
        workspace: a `Workspace` of reusable buffers; the result is a view of one of them, valid
        until the next call with the same workspace.
        """
        tb = tables
        if tb.dtype != torch.float32:
            return self.corrections(tb, xhat, idx) - r.unsqueeze(-2)
        if tb.expanded:
            raise ValueError("tables built for the expanded error: use candidate_errors")
        projected = tb.out_weight is not None   # QINCo2: e accumulates in its own slice
        D = xhat.shape[1]

        def tail(part):                          # −r, so that the tables' c make c − r
            torch.neg(r, out=part[:, :D])

        def before_last(z):                      # QINCo1: z − r, so that e accumulates in z
            z.sub_(r.unsqueeze(1))

        G, z, z2 = self._evaluate_candidates(tb, xhat, idx, workspace, tail if projected else None,
                                             None if projected else before_last)
        if not projected:
            return z
        e_off = tb.layout.e_off
        G.view(-1, G.shape[-1])[:, e_off:e_off + D].addmm_(z2, tb.out_weight)   # c − r + W_out z
        return G[:, :, e_off:e_off + D]

    def candidate_errors(self, tables, xhat, r, idx=None, workspace=None, with_z=False):
        """‖f(c, x̂) − r‖² for candidate codewords of each hypothesis, float32 (R, C), from tables
        built with the expanded error (QINCo2; `architecture.expands_error`).

        With e = c − r + W_out z: ‖e‖² = ‖c‖² − 2 c·r + ‖r‖² + z·q, q = 2 W_outᵀ(c − r) + Gz,
        G = W_outᵀ W_out. The buffer G = [z | p | q] is filled as in `candidate_residuals`, from
        the per-codeword tables [t0 | t1 | 2 W_outᵀc] and the per-hypothesis terms
        [W_x x̂ | W1 W_x x̂ | −2 W_outᵀr]; after the blocks one (de, de) matmul accumulates Gz
        into q. The only D-wide products are c·r: one (R, K) matmul for all K codewords, or the
        C pre-selected rows' dots (`architecture.gathers_cr`). Same arguments as
        `candidate_residuals`; with_z also returns the candidates' last hidden states z
        (R, C, de), a view valid until the next call with the workspace, from which
        `apply_correction` reconstructs the winners (x̂ + c + W_out z, a D x de product each).
        """
        tb = tables
        R, C, de = xhat.shape[0], self.K if idx is None else idx.shape[-1], self.embed

        def tail(part):                          # −2 W_outᵀ r
            torch.mm(r, tb.out_weight.T, out=part[:, :de]).mul_(-2.0)

        ws = workspace if workspace is not None else Workspace()
        G, z, z2 = self._evaluate_candidates(tb, xhat, idx, ws, tail)
        e_off = tb.layout.e_off
        G2 = G.view(R * C, -1)
        q = G2[:, e_off:e_off + de].addmm_(z2, tb.gram).view(R, C, de)   # 2 W_outᵀ(c − r) + Gz
        err = torch.linalg.vecdot(z, q)                                   # (R, C)
        if idx is None:
            cr, c_sq = torch.mm(r, tb.codebook.T), tb.c_sq.unsqueeze(0)   # (R, K)
        elif gathers_cr(self.shape, C):
            rows = torch.index_select(tb.codebook, 0, idx.reshape(-1), out=ws.get("cr", (R * C, self.dim), r))
            cr, c_sq = torch.linalg.vecdot(rows.view(R, C, -1), r.unsqueeze(1)), tb.c_sq[idx]   # (R, C)
        else:
            cr, c_sq = torch.mm(r, tb.codebook.T).gather(1, idx), tb.c_sq[idx]
        err.add_(c_sq).add_(cr, alpha=-2.0).add_(torch.linalg.vecdot(r, r).unsqueeze(1))
        return (err, z) if with_z else err

    def decode_tables(self, dtype=torch.float32):
        """What `decode_step` needs: the (K, de) first-layer table and the weights (no K x h table:
        with one candidate per vector the first block's matmul costs the same either way)."""
        if dtype != torch.float32:
            return self.candidate_tables(dtype)
        return StepTables(t0=self.first_layer_table(), t1=None, dtype=dtype, **self._weights(lambda t: t))

    def decode_step(self, tables, xhat, codes):
        """x̂ + f(C[codes], x̂) for one code per row: xhat (R, dim), codes (R,) -> (R, dim).
        float32 updates xhat in place (and returns it); bfloat16 uses `corrections`."""
        tb = tables
        if tb.dtype != torch.float32:
            return xhat + self.corrections(tb, xhat, codes.unsqueeze(-1)).squeeze(-2)
        z = tb.t0[codes].addmm_(xhat, tb.x_weight)                        # (R, de)
        for w_in, w_out in zip(tb.block_in, tb.block_out):
            z.addmm_(torch.mm(z, w_in).relu_(), w_out)
        return self.apply_correction(tb, xhat, codes, z)

    def apply_correction(self, tables, xhat, codes, z):
        """x̂ + f from the network's last hidden state z (R, de) of codes (R,): x̂ + c + W_out z
        (QINCo2) or x̂ + z (QINCo1), float32, updating xhat (R, dim) in place (and returning it)."""
        if tables.out_weight is None:
            return xhat.add_(z)
        return xhat.add_(tables.codebook[codes]).addmm_(z, tables.out_weight)
