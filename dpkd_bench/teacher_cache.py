"""Teacher-logit cache: the teacher's top-k log-probabilities, computed once per recipe.

Teacher-forced methods (kd, rkl, tvd, skew_*, gkd's off-policy batches, dpkd_token) run the
frozen teacher on the same (prompt, response) pairs at every step, every epoch, every seed and
every method. The cache runs it once over the training items and keeps, for each position that
predicts a response token, the teacher's ``k`` largest log-probabilities, their token ids and
the log-mass of everything else (the "rest"). Shards are fp16 (log-probs) and uint16/int32
(ids) ``.npy`` files, memory-mapped, in a directory named by a content hash of the teacher,
the items and ``k``.

The approximation (the exact mode -- no cache -- stays the default)
--------------------------------------------------------------------
p is known exactly on its top-k support S and only as a total p(rest) = 1 - sum_S p outside.
The methods complete it by maximum entropy: p~(v) = p(v) on S and p~(v) = p(rest) / (V - k)
for every other token (:func:`spread_teacher`), and run the unchanged ``dpkd_bench.losses``
function on the student's full logits against p~. So every loss is exact on S; outside S the
teacher is flat. The forward KL's tail term sum_{v not in S} p(v) log(p(v) / q(v)) becomes the
same sum over p~, both weighted by p(rest) in all, so its error is small when p(rest) is. The
reverse KL's error is sum_{v not in S} q(v) log(p(v) / p~(v)): weighted by the student's mass
outside S, and large when the student puts mass on tokens the teacher rates far below the flat
value (early in training, a weak student). dpkd_token's chosen token (the teacher's top-1) and
rejected token (the student's argmax) stay exact; only log p(y_s) of a rejected token outside S
is the flat value.

:func:`bucketed` is the other natural completion, kept for comparison: both distributions
coarsened to the (k+1) buckets (p_1, ..., p_k, p(rest)) and (q_1, ..., q_k, q(rest)). By the
data-processing inequality it never exceeds the exact divergence, but it drops the whole
divergence inside the rest bucket, which for the reverse KL (a student with mass where the
teacher has almost none) is large: on the default benchmark ``benchmarks/teacher_cache_error.py``
measures it at about 14% for rkl against under 0.5% for the flat tail (figures in
``benchmarks/README.md``).

Log-probabilities are stored in fp16 (about 3 significant digits). A method with a temperature
other than 1 cannot use the cache (tempering changes the tail's shape).

Alignment: cached rows follow the collate convention -- row j of an item predicts its j-th
response token, in the order of ``labels[:, 1:] != -100``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dpkd_bench.cache_check import discard, intact, seal
from dpkd_bench.data.collate import IGNORE, collate_pairs
from dpkd_bench.methods.base import response_logits

CACHE_FORMAT = 1
DEFAULT_K = 64
MANIFEST = "manifest.json"
SHARD_ITEMS = 4096

CachedRows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids [N, k], logp [N, k], rest [N]


# ---------------------------------------------------------------------------- keys


def items_hash(items: Sequence[dict]) -> str:
    """Content hash of the (prompt, response) token ids of ``items``, in order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([list(item["prompts"]), list(item["responses"])]).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def model_fingerprint(model) -> str:
    """Content hash of a model's parameters and buffers (names, shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(flat.shape)}:{flat.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(teacher_id: str, items: Sequence[dict], k: int) -> str:
    blob = json.dumps([CACHE_FORMAT, teacher_id, items_hash(items), k]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pair_key(prompt: Sequence[int], response: Sequence[int]) -> tuple[tuple, tuple]:
    return tuple(int(t) for t in prompt), tuple(int(t) for t in response)


def pair_keys(pairs: dict[str, torch.Tensor]) -> list[tuple[tuple, tuple]]:
    """(prompt, response) token ids of every row of a right-padded ``collate_pairs`` batch."""
    keys = []
    for ids, labels in zip(pairs["input_ids"].tolist(), pairs["labels"].tolist(), strict=True):
        response = [t for t in labels if t != IGNORE]
        start = next((j for j, t in enumerate(labels) if t != IGNORE), len(labels))
        keys.append(pair_key(ids[:start], response))
    return keys


# ---------------------------------------------------------------------------- teacher top-k


def topk_rows(logits: torch.Tensor, k: int) -> CachedRows:
    """Top-k token ids and log-probs of each row, and the log-mass of the other tokens.

    [N, V] -> ids [N, k], logp [N, k], rest [N] (all computed in float32)
    """
    log_p = F.log_softmax(logits.float(), dim=-1)
    logp, ids = log_p.topk(k, dim=-1)
    rest = torch.logsumexp(log_p.scatter(-1, ids, float("-inf")), dim=-1)
    return ids, logp, rest


def fold_rest(logp: torch.Tensor, rest: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first ``k`` of the sorted top entries and fold the others into the rest.

    [N, K], [N] -> [N, k], [N]
    """
    if k == logp.shape[-1]:
        return logp, rest
    dropped = torch.logsumexp(logp[:, k:], dim=-1)
    return logp[:, :k], torch.logaddexp(rest, dropped)


# ---------------------------------------------------------------------------- loss helpers


def student_buckets(student_logits: torch.Tensor, topk_ids: torch.Tensor) -> torch.Tensor:
    """log q on the teacher's top-k tokens, then log q(rest). [N, V], [N, k] -> [N, k + 1]"""
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    top = log_q.gather(-1, topk_ids)
    rest = torch.logsumexp(log_q.scatter(-1, topk_ids, float("-inf")), dim=-1)
    return torch.cat([top, rest[:, None]], dim=-1)


def teacher_buckets(topk_logp: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """log p on its top-k tokens, then log p(rest). [N, k], [N] -> [N, k + 1]"""
    return torch.cat([topk_logp.float(), rest.float()[:, None]], dim=-1)


def spread_teacher(
    topk_ids: torch.Tensor, topk_logp: torch.Tensor, rest: torch.Tensor, vocab: int
) -> torch.Tensor:
    """Full teacher log-probs: exact on the top-k, the rest mass spread uniformly elsewhere.

    [N, k], [N, k], [N] -> [N, V]
    """
    k = topk_ids.shape[-1]
    tail = rest.float() - math.log(vocab - k)
    full = tail[:, None].expand(-1, vocab).clone()
    return full.scatter(-1, topk_ids, topk_logp.float())


def bucketed(
    token_divergence: Callable[..., torch.Tensor],
    student_logits: torch.Tensor,
    cached: CachedRows,
    **kwargs,
) -> torch.Tensor:
    """A ``losses.token_*`` divergence on the (k+1)-bucket distributions. [N, V] -> [N]

    The bucket log-probabilities are passed as logits (log-softmax leaves them unchanged up to
    renormalisation of the fp16 teacher values).
    """
    ids, logp, rest = cached
    student = student_buckets(student_logits, ids)[None]
    teacher = teacher_buckets(logp, rest)[None]
    return token_divergence(student, teacher, **kwargs)[0]


def spread(
    token_loss: Callable[..., torch.Tensor],
    student_logits: torch.Tensor,
    cached: CachedRows,
    **kwargs,
) -> torch.Tensor:
    """A ``losses.token_*`` loss against the uniform-tail teacher of :func:`spread_teacher`.

    [N, V] -> [N]
    """
    teacher = spread_teacher(*cached, vocab=student_logits.shape[-1])
    return token_loss(student_logits[None], teacher[None], **kwargs)[0]


# ---------------------------------------------------------------------------- the cache


@dataclass
class TeacherCache:
    """A built cache: memory-mapped shards and a (prompt, response) -> item index."""

    path: Path
    k: int
    vocab_size: int
    shard_items: int
    offsets: list[np.ndarray]  # per shard: row offset of each local item, [n + 1]
    shards: list[dict[str, np.ndarray]]  # per shard: ids [R, k], logp [R, k], rest [R]
    index: dict[tuple[tuple, tuple], int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return sum(len(o) - 1 for o in self.offsets)

    def _item(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shard, local = divmod(int(i), self.shard_items)
        start, end = self.offsets[shard][local], self.offsets[shard][local + 1]
        arrays = self.shards[shard]
        return arrays["ids"][start:end], arrays["logp"][start:end], arrays["rest"][start:end]

    def rows(self, indices: Sequence[int], k: int | None = None) -> CachedRows:
        """Rows of the items, concatenated in order (the order of ``labels[:, 1:] != -100``).

        ``k`` <= the cache's k keeps the first k entries and folds the others into the rest.
        -> ids [N, k] int64, logp [N, k] float32, rest [N] float32
        """
        parts = [self._item(i) for i in indices]
        ids = torch.from_numpy(np.concatenate([p[0] for p in parts]).astype(np.int64))
        logp = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32))
        rest = torch.from_numpy(np.concatenate([p[2] for p in parts]).astype(np.float32))
        k = self.k if k is None else k
        if not 1 <= k <= self.k:
            raise ValueError(f"k must be in [1, {self.k}] for this cache, got {k}")
        logp, rest = fold_rest(logp, rest, k)
        return ids[:, :k], logp, rest

    def lookup(self, indices: Sequence[int], k: int | None = None) -> CachedRows:
        """Padded per-item rows: ids [B, T, k], logp [B, T, k], rest [B, T]; T = longest.

        Padding rows hold id 0, log-prob -inf and rest 0 (all mass in the rest bucket).
        """
        lengths = [len(self._item(i)[2]) for i in indices]
        ids, logp, rest = self.rows(indices, k)
        width = max(lengths, default=0)
        valid = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # [B, T]
        out_ids = ids.new_zeros((len(lengths), width, ids.shape[-1]))
        out_logp = logp.new_full((len(lengths), width, ids.shape[-1]), float("-inf"))
        out_rest = rest.new_zeros((len(lengths), width))
        out_ids[valid], out_logp[valid], out_rest[valid] = ids, logp, rest
        return out_ids, out_logp, out_rest

    def indices_of(self, keys: Sequence[tuple[tuple, tuple]]) -> list[int] | None:
        """Item indices of (prompt, response) keys; None when any of them is not cached."""
        found = [self.index.get(key) for key in keys]
        return None if any(i is None for i in found) else found

    def rows_for_pairs(self, pairs: dict[str, torch.Tensor], k: int | None = None):
        """Cached rows for a ``collate_pairs`` batch, or None when any row is not cached."""
        indices = self.indices_of(pair_keys(pairs))
        return None if indices is None else self.rows(indices, k)


# ---------------------------------------------------------------------------- build / load


def _id_dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


@torch.no_grad()
def _teacher_rows(teacher, items: Sequence[dict], pad_id: int, k: int, device) -> CachedRows:
    """Top-k rows of a batch of items, in item order (response tokens only)."""
    pairs = collate_pairs([i["prompts"] for i in items], [i["responses"] for i in items], pad_id)
    pairs = {name: t.to(device) for name, t in pairs.items()}
    mask = pairs["labels"][:, 1:] != IGNORE
    return topk_rows(response_logits(teacher, pairs, mask), k)


def _write_shard(
    teacher, items: Sequence[dict], k: int, vocab: int, out: Path, name: str, opts: dict
) -> None:
    """Compute one shard's rows (length-sorted batches) and save them in item order."""
    lengths = np.array([len(i["responses"]) for i in items], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.zeros((offsets[-1], k), dtype=_id_dtype(vocab))
    logp = np.zeros((offsets[-1], k), dtype=np.float16)
    rest = np.zeros((offsets[-1],), dtype=np.float16)
    order = sorted(range(len(items)), key=lambda i: len(items[i]["prompts"]) + lengths[i])
    for start in range(0, len(order), opts["batch_size"]):
        chunk = order[start : start + opts["batch_size"]]
        rows = _teacher_rows(teacher, [items[i] for i in chunk], opts["pad_id"], k, opts["device"])
        batch_ids, batch_logp, batch_rest = (r.cpu().numpy() for r in rows)
        position = 0
        for i in chunk:
            span, n = slice(offsets[i], offsets[i + 1]), int(lengths[i])
            ids[span] = batch_ids[position : position + n]
            logp[span] = batch_logp[position : position + n]
            rest[span] = batch_rest[position : position + n]
            position += n
    for suffix, array in (("offsets", offsets), ("ids", ids), ("logp", logp), ("rest", rest)):
        np.save(out / f"{name}.{suffix}.npy", array)


def _vocab_size(teacher) -> int:
    return teacher.get_output_embeddings().weight.shape[0]


def build_cache(
    teacher,
    items: Sequence[dict],
    k: int = DEFAULT_K,
    path: str | Path = ".",
    batch_size: int = 32,
    *,
    teacher_id: str | None = None,
    pad_id: int = 0,
    device=None,
    shard_items: int = SHARD_ITEMS,
) -> TeacherCache:
    """The teacher's top-k cache of ``items`` under ``path/teacher-topk-<key>``, built once.

    ``teacher_id`` names the teacher in the content key (default: a hash of its weights);
    ``pad_id`` must be the tokenizer's pad id (the batches are collated as in training).
    An existing complete cache with the same key is loaded, not recomputed.
    """
    vocab = _vocab_size(teacher)
    if not 1 <= k < vocab:
        raise ValueError(f"k must be in [1, {vocab - 1}] (below the vocabulary), got {k}")
    key = cache_key(teacher_id or model_fingerprint(teacher), items, k)
    final = Path(path) / f"teacher-topk-{key}"
    what = "the teacher-logit cache"
    if intact(final, what) and (final / MANIFEST).is_file():
        try:
            return load_cache(final, items)
        except (OSError, ValueError, KeyError) as err:  # unsealed, from an older version
            discard(final, what, f"{type(err).__name__}: {' '.join(str(err).split())[:120]}")
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    device = device or next(teacher.parameters()).device
    opts = {"batch_size": batch_size, "pad_id": pad_id, "device": device}
    n_shards = max(1, math.ceil(len(items) / shard_items))
    for s in range(n_shards):
        shard = items[s * shard_items : (s + 1) * shard_items]
        _write_shard(teacher, shard, k, vocab, tmp, f"shard-{s:05d}", opts)
    manifest = {
        "format": CACHE_FORMAT,
        "key": key,
        "k": k,
        "vocab_size": vocab,
        "n_items": len(items),
        "shard_items": shard_items,
        "n_shards": n_shards,
        "items_hash": items_hash(items),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    seal(tmp)
    try:
        os.replace(tmp, final)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return load_cache(final, items)


def load_cache(path: str | Path, items: Sequence[dict]) -> TeacherCache:
    """Open a built cache (memory-mapped) for the same ``items`` it was built from."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    if manifest["format"] != CACHE_FORMAT or manifest["items_hash"] != items_hash(items):
        raise ValueError(
            f"teacher cache {path} was built for other items or an older format; delete it "
            "and rebuild it for these items"
        )
    offsets, shards = [], []
    for s in range(manifest["n_shards"]):
        stem = path / f"shard-{s:05d}"
        offsets.append(np.load(f"{stem}.offsets.npy"))
        shards.append(
            {name: np.load(f"{stem}.{name}.npy", mmap_mode="r") for name in ("ids", "logp", "rest")}
        )
    index = {pair_key(i["prompts"], i["responses"]): n for n, i in enumerate(items)}
    return TeacherCache(
        path, manifest["k"], manifest["vocab_size"], manifest["shard_items"], offsets, shards, index
    )
