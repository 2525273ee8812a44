"""The shard schedule: who computes which (row shard, key shard) block, and the messages between two ranks.

Rank r holds rows [offset_r, offset_r + L_r) of the sequence (shards in rank order). Every attention-like pass of
DeltaFormer splits into *pair blocks* (rows of rank r, keys of rank j <= r). A diagonal block (j = r) is always
computed by rank r. An off-diagonal block (j < r) needs row data, which rank r holds, and key data (k_j, u_j),
which rank j holds once its u is final; so it is split by rows at a point h: rows [0, h) are computed by the *row
owner* r (after receiving the key data), rows [h, L_r) by the *key owner* j (after receiving those rows). The four
kinds of pair blocks:

- ``fold``: the write pass, rows w_r folded over (k_j, u_j) into the prefix statistics of rank r's u-stage;
- ``readout``: the read-out, rows q_r over (k_j, u_j) (partial outputs merged by log-sum-exp);
- ``readout_grad``: the read-out's backward for the same block (gives dq_r, dk_j, du_j);
- ``cross_grad``: the write pass's backward for a fold block (gives dw_r, dk_j, dv_j).

Assignment (docs/context_parallel.md derives it): folds and their backward are done by the row owner, read-outs and
their backward by the key owner, except on the adjacent pair (r, r - 1), which lies on the critical path and is
split at the fractions of ``SPLITS``. Why: rank r must wait for every earlier u anyway, so it folds the earlier
blocks itself while it waits; rank j is idle once its u is final, so it reads out the later rows over its keys.
With equal shards every rank then does the same total work (2R triangles of L^2 / 2 pairs each).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "SPLITS", "Message", "Plan", "Splits", "backward_messages", "carry_messages", "forward_messages"]

KINDS: tuple[str, ...] = ("fold", "readout", "readout_grad", "cross_grad")


@dataclass(frozen=True)
class Splits:
    """For the adjacent pair (r, r - 1): the fraction of rank r's rows that rank r itself computes, per kind.

    The rest of the rows go to rank r - 1 (the key owner). The forward's critical path is u_{r-1} -> fold of
    block (r, r - 1) -> u_r, so rank r - 1 takes a share of that fold as soon as its own u is final; the
    backward's is X_r -> write-pass backward of block (r, r - 1) -> X_{r-1}, split the same way. The fractions
    balance the two ranks' compute at R = 2 with equal shards, from per-step CPU times measured with
    ``benchmarks.context_parallel`` (docs/context_parallel.md, "Critical path and load balance").
    """

    fold: float = 0.6
    readout: float = 0.0
    readout_grad: float = 0.0
    cross_grad: float = 0.6

    def fraction(self, kind: str) -> float:
        value: float = getattr(self, kind)
        return value


SPLITS = Splits()
"""The splits every call uses (tests replace it to cover every split, including all-to-one-side)."""


@dataclass(frozen=True)
class Message:
    """One point-to-point message of a pass: ``name``, sender rank, receiver rank, and shape [B, H, rows, width]."""

    name: str
    src: int
    dst: int
    rows: int
    width: int


@dataclass(frozen=True)
class Plan:
    """Shard lengths and the split point h of every off-diagonal pair block (same on every rank)."""

    lengths: tuple[int, ...]
    splits: Splits

    @property
    def world(self) -> int:
        return len(self.lengths)

    def offset(self, rank: int) -> int:
        return sum(self.lengths[:rank])

    def owner_rows(self, kind: str, r: int, j: int) -> int:
        """h for the block (rows of r, keys of j < r): rows [0, h) by rank r, [h, L_r) by rank j."""
        if not 0 <= j < r < self.world:
            raise ValueError(f"a pair block needs 0 <= j < r < {self.world}, got r = {r}, j = {j}")
        L = self.lengths[r]
        if j == r - 1:
            return min(L, max(0, round(self.splits.fraction(kind) * L)))
        return L if kind in ("fold", "cross_grad") else 0

    def key_data_needed(self, r: int, j: int, kinds: tuple[str, ...]) -> bool:
        """Does rank r compute rows of any of these kinds over the keys of j (so it needs (k_j, u_j))?"""
        return any(self.owner_rows(kind, r, j) > 0 for kind in kinds)

    def helped(self, kind: str, r: int, j: int) -> bool:
        """Does rank j compute some rows of the block (r, j)?"""
        return self.owner_rows(kind, r, j) < self.lengths[r]


def forward_messages(plan: Plan, j: int, r: int, *, K: int, V: int) -> list[Message]:
    """The forward's messages between ranks j < r, in the order both ranks issue them.

    Row data (w and q rows for the key owner's share) go first, then the key data (k_j, u_j), then the key owner's
    results (fold statistics and read-out partial outputs: V columns and the row log-sum-exp).
    """
    L = plan.lengths[r]
    fold_h, read_h = plan.owner_rows("fold", r, j), plan.owner_rows("readout", r, j)
    messages = []
    if fold_h < L:
        messages.append(Message("fold_rows", r, j, L - fold_h, K))
    if read_h < L:
        messages.append(Message("readout_rows", r, j, L - read_h, K))
    if fold_h > 0 or read_h > 0:
        messages += [Message("keys", j, r, plan.lengths[j], K), Message("values", j, r, plan.lengths[j], V)]
    if fold_h < L:
        messages.append(Message("fold_result", j, r, L - fold_h, V + 1))
    if read_h < L:
        messages.append(Message("readout_result", j, r, L - read_h, V + 1))
    return messages


def backward_messages(plan: Plan, j: int, r: int, *, K: int, V: int) -> list[Message]:
    """The backward's messages between ranks j < r, in the order both ranks issue them.

    Read-out block: rank r's rows (q, dO, o, lse) to rank j; key data (k_j, u_j) to rank r; dq of j's share back
    to r; (dk_j, du_j) of r's share back to j. Then the write-pass block: rank r's rows (w, dO_w, r_w, lse_w) to
    rank j; (dk_j, dv_j) of r's share to j; dw of j's share back to r.
    """
    L = plan.lengths[r]
    read_h, cross_h = plan.owner_rows("readout_grad", r, j), plan.owner_rows("cross_grad", r, j)
    messages = []
    if read_h < L:
        messages.append(Message("readout_rows", r, j, L - read_h, K + 2 * V + 1))
    if read_h > 0 or cross_h > 0:
        messages += [Message("keys", j, r, plan.lengths[j], K), Message("values", j, r, plan.lengths[j], V)]
    if read_h < L:
        messages.append(Message("readout_dq", j, r, L - read_h, K))
    if read_h > 0:
        messages.append(Message("readout_key_grads", r, j, plan.lengths[j], K + V))
    if cross_h < L:
        messages.append(Message("cross_rows", r, j, L - cross_h, K + 2 * V + 1))
    if cross_h > 0:
        messages.append(Message("cross_key_grads", r, j, plan.lengths[j], K + V))
    if cross_h < L:
        messages.append(Message("cross_dw", j, r, L - cross_h, K))
    return messages


def carry_messages(plan: Plan, j: int, r: int, *, K: int, V: int, name: str, reverse: bool = False) -> list[Message]:
    """The delta rule's state carry between ranks j < r: one [K, V] state from j to r = j + 1 (``reverse``: its
    gradient from r to j); nothing between ranks that are not adjacent."""
    del plan
    if r != j + 1:
        return []
    return [Message(name, r if reverse else j, j if reverse else r, K, V)]
