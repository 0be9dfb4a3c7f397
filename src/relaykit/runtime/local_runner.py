"""An in-process runner: one model, its KV cache over a batch of sequences, and incremental catch-up."""

from __future__ import annotations

import time

import torch

from ..decoding.sampler import SamplingConfig
from ..decoding.sequence import Sequence
from ..decoding.usage import Usage
from ..models.engine import Engine
from ..models.kv import KVPolicy
from ..models.model import Model
from .asks import Generate, Logits
from .load import Load


class _Row:
    """What a runner has read of one sequence."""

    __slots__ = ("sequence", "seen", "visible_before", "truncations_seen")

    def __init__(self, sequence: Sequence):
        self.sequence = sequence
        self.truncations_seen = len(sequence.truncations)
        self.seen = 0  # sequence tokens consumed (visible or not)
        self.visible_before = [0]  # visible_before[j]: visible tokens among the first j consumed

    @property
    def position(self) -> int:
        return self.visible_before[-1]


class LocalRunner:
    """Keeps a KV cache over each sequence's prefix and catches up only on unseen tokens.

    `name` is the role the model plays ("large", "small", ...): it is the provenance tag of the
    tokens this model writes and the key of its usage. A sequence may be truncated at any time;
    the runner notices and rolls its cache back on the next call. Rows are keyed by the
    sequence's `uid`; `release` drops a row and hands back what the model spent on it.
    """

    # a forward's fixed cost in padded tokens: above it, rows of different feed lengths run apart
    # (measured on the toy pair on a CPU: ~4.6 ms a forward, ~0.09 ms a padded row-token; 12 and 48
    # give the same continuous throughput in benchmarks/bench_scheduler.py)
    overhead_tokens = 48
    batched = True  # answers a step's asks in one forward


    def __init__(self, model: Model, name: str | None = None, policy: KVPolicy | None = None):
        self.model = model
        self.name = name or model.name
        self.policy = policy or KVPolicy()
        self.usage = Usage()
        self.usage_by_sequence: dict[int, Usage] = {}
        self.load = Load(self.overhead_tokens)
        self._new_engine()

    def _new_engine(self) -> None:
        self.engine: Engine = self.model.make_engine(self.policy)
        self.rows: list[_Row | None] = []  # the live rows first, then free ones (None)
        self.index: dict[int, int] = {}
        self.live = 0

    def refuses(self, ask: Logits | Generate) -> str | None:
        """An in-process model answers every ask."""
        return None

    def refuses_sampling(self, sampling: SamplingConfig) -> str | None:
        return None

    def usage_of(self, sequence: Sequence) -> Usage:
        """This model's work for one sequence; a batched forward is split by tokens fed."""
        return self.usage_by_sequence.get(sequence.uid, Usage())

    def release(self, sequence: Sequence) -> Usage:
        """Drop a sequence's row now and return this model's work for it. The last live row
        moves into its place, so that live rows stay one block (attention reads them in place)."""
        index = self.index.pop(sequence.uid, None)
        if index is not None:
            last = self.live - 1
            if index != last:
                self.engine.move_row(last, index)
                moved = self.rows[index] = self._at(last)
                self.index[moved.sequence.uid] = index
            self.engine.clear_row(last)
            self.rows[last] = None
            self.live -= 1
        return self.usage_by_sequence.pop(sequence.uid, Usage())

    def compact(self) -> None:
        """Give back the memory of free rows once they are three quarters of all rows (rows grow
        by doubling, so this keeps memory within 4x of what the live rows need)."""
        if 4 * (len(self.rows) - self.live) < 3 * len(self.rows) or len(self.rows) == self.live:
            return
        self.engine.keep_rows(list(range(self.live)))
        del self.rows[self.live :]

    @property
    def kv_bytes(self) -> int:
        """Key/value bytes of the cached tokens of this model's rows (0 for engines that do not
        measure it)."""
        return self.engine.kv_bytes()

    def fork(self, parent: Sequence, children: list[Sequence]) -> None:
        """Give each child (a `parent.fork()`) a copy of the parent's row: what the parent has
        read is not read again. Nothing happens for a parent this runner has not read."""
        source = self.index.get(parent.uid)
        if source is None:
            return
        parent_row = self._at(source)
        self._sync(parent_row)
        for child in children:
            index = self._new_row(child)
            self.engine.copy_row(source, index)
            row = self._at(index)
            row.seen, row.visible_before = parent_row.seen, list(parent_row.visible_before)

    def prefill(self, sequences: list[Sequence]) -> None:
        """Read every unseen visible token but the last, computing no logits (the next call feeds
        the last token and predicts after it)."""
        rows = [self._row(s) for s in sequences]
        self._sync_all()
        feed: list[list[int]] = [[] for _ in self.rows]
        for row in rows:
            unseen = [i for i in range(row.seen, len(row.sequence)) if row.sequence.is_visible(i, self.name)]
            if len(unseen) > 1:
                feed[self.index[row.sequence.uid]] = self._consume(row, unseen[-1])
        if any(feed):
            self._forward(feed, [0] * len(feed))

    def next_logits(self, sequences: list[Sequence]) -> torch.Tensor:
        """Next-token logits [B, V] for each sequence, after catching up on its new tokens."""
        return self.score(sequences, 1)[:, -1]

    def score(self, sequences: list[Sequence], k: int | list[int]) -> torch.Tensor:
        """Logits [B, K, V] predicting the token after each of the last k visible positions; k may
        differ per sequence (then K is the largest, and row b's logits are its last k[b])."""
        ks = [k] * len(sequences) if isinstance(k, int) else list(k)
        rows = [self._row(s) for s in sequences]
        self._sync_all()
        for row, row_k in zip(rows, ks):
            self._ensure_unseen(row, row_k)
        feed: list[list[int]] = [[] for _ in self.rows]
        wanted = [1] * len(self.rows)
        picked = [self.index[s.uid] for s in sequences]
        for row_index, row, row_k in zip(picked, rows, ks):
            feed[row_index], wanted[row_index] = self._consume(row), row_k
        groups = self._groups(feed)
        self.load.stepped([len(tokens) for tokens in feed if tokens])
        if len(groups) == 1:
            logits, fed_rows = self._forward(feed, wanted), groups[0]
        else:
            parts = []
            for group in groups:
                members = set(group)
                parts.append(self._forward([t if i in members else [] for i, t in enumerate(feed)], wanted))
            logits, fed_rows = torch.cat(parts), [i for group in groups for i in group]
        if picked == fed_rows:
            return logits
        rank = {row: i for i, row in enumerate(fed_rows)}
        return logits.index_select(0, torch.tensor([rank[i] for i in picked], dtype=torch.long, device=logits.device))

    def rollback(self, sequences: list[Sequence], n: int) -> None:
        """Drop the last n consumed tokens of each sequence from the cache (they are re-read later)."""
        for sequence in sequences:
            row = self._row(sequence)
            self._rewind(row, max(row.seen - n, 0))

    # internals

    def _row(self, sequence: Sequence) -> _Row:
        index = self.index.get(sequence.uid)
        return self._at(self._new_row(sequence) if index is None else index)

    def _at(self, index: int) -> _Row:
        row = self.rows[index]
        assert row is not None, "rows below `live` hold a sequence"
        return row

    def _new_row(self, sequence: Sequence) -> int:
        """A row for a sequence this runner has not read: the first free one (rows grow by doubling)."""
        if self.live == len(self.rows):
            grow = max(1, len(self.rows))
            self.engine.add_rows(grow)
            self.rows += [None] * grow
        index = self.live
        self.live += 1
        self.rows[index] = _Row(sequence)
        self.index[sequence.uid] = index
        self.usage_by_sequence.setdefault(sequence.uid, Usage())
        return index

    def _sync_all(self) -> None:
        """Replay truncations on every row, asked or not, before a forward: a KV policy's pending
        drops must be undone by a rollback before the forward commits them."""
        for row in self.rows:
            if row is not None and len(row.sequence.truncations) != row.truncations_seen:
                self._sync(row)

    def _sync(self, row: _Row) -> None:
        """Roll back past any truncation made since the last call (even if re-extended since)."""
        truncations = row.sequence.truncations[row.truncations_seen :]
        row.truncations_seen += len(truncations)
        if truncations and min(truncations) < row.seen:
            self._rewind(row, min(truncations))

    def _ensure_unseen(self, row: _Row, k: int) -> None:
        """Rewind so that at least k visible tokens are still to be read."""
        sequence, unseen, start = row.sequence, 0, len(row.sequence)
        while start > 0 and unseen < k:
            start -= 1
            unseen += sequence.is_visible(start, self.name)
        if unseen < k:
            raise ValueError(f"{self.name} cannot score {k} positions of a {unseen}-token sequence")
        if start < row.seen:
            self._rewind(row, start)

    def _rewind(self, row: _Row, seen: int) -> None:
        dropped = row.visible_before[row.seen] - row.visible_before[seen]
        row_index = self.index[row.sequence.uid]
        self.engine.truncate(row_index, self.engine.lengths[row_index] - dropped)
        del row.visible_before[seen + 1 :]
        row.seen = seen

    def _consume(self, row: _Row, end: int | None = None) -> list[int]:
        """The visible tokens from the row's position to `end` (default: the sequence's end),
        counted as prefill (another writer's) or decode (this model's own) tokens."""
        sequence = row.sequence
        end = len(sequence) if end is None else end
        usage = self.usage_by_sequence[sequence.uid]
        tokens = []
        visible = row.visible_before[-1]
        for index in range(row.seen, end):
            if sequence.is_visible(index, self.name):
                tokens.append(sequence.tokens[index])
                visible += 1
                own = sequence.writers[index] == self.name
                for u in (usage, self.usage):
                    if own:
                        u.decode_tokens += 1
                    else:
                        u.prefill_tokens += 1
            row.visible_before.append(visible)
        row.seen = end
        return tokens

    def _groups(self, feed: list[list[int]]) -> list[list[int]]:
        """Fed rows in groups, one forward each: a forward pads every row to its longest feed, so
        rows of very different feed lengths (new prompts, verification chunks, single tokens) go
        apart when the padding saved outweighs a forward's fixed cost (`overhead_tokens`). Rows of
        one length never split, so the search runs over the distinct lengths (a handful)."""
        by_length: dict[int, list[int]] = {}
        for i, tokens in enumerate(feed):
            if tokens:
                by_length.setdefault(len(tokens), []).append(i)
        lengths = sorted(by_length)
        if len(lengths) == 1:
            return [by_length[lengths[0]]]
        # best[j]: the cheapest cost of the rows of the j shortest lengths; a group costs
        # overhead + its rows x its longest feed
        before = [0]  # before[k]: rows of the k shortest lengths
        for length in lengths:
            before.append(before[-1] + len(by_length[length]))
        best, cut = [0.0] + [float("inf")] * len(lengths), [0] * (len(lengths) + 1)
        for j in range(1, len(lengths) + 1):
            for i in range(j):
                cost = best[i] + self.overhead_tokens + (before[j] - before[i]) * lengths[j - 1]
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        groups, j = [], len(lengths)
        while j:
            groups.append(sorted(row for length in lengths[cut[j] : j] for row in by_length[length]))
            j = cut[j]
        return groups[::-1]

    def _forward(self, feed: list[list[int]], wanted: list[int]) -> torch.Tensor:
        positions = [row.position - len(tokens) if row is not None else 0 for row, tokens in zip(self.rows, feed)]
        starts = self.engine.lengths
        started = time.perf_counter()
        logits = self.engine.forward(feed, positions, wanted)
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)  # the forward's own time, not its launch
        seconds = time.perf_counter() - started
        total_tokens = sum(map(len, feed))
        fed = [len(tokens) for tokens in feed if tokens]
        self.load.observe(len(fed) * max(fed), seconds)
        slot_bytes = self.engine.kv_slot_bytes()
        total = self.usage
        total.forward_calls += 1
        total.seconds += seconds
        total.kv_peak_bytes = max(total.kv_peak_bytes, self.engine.kv_peak_bytes())
        for row, tokens, start, length, k in zip(self.rows, feed, starts, self.engine.lengths, wanted):
            if not tokens or row is None:
                continue
            n = len(tokens)
            usage = self.usage_by_sequence[row.sequence.uid]
            flops = self.model.forward_flops(n, n * start + n * (n + 1) // 2, k)
            usage.forward_calls += 1
            usage.seconds += seconds * n / total_tokens
            usage.flops += flops
            total.flops += flops
            usage.kv_peak_bytes = max(usage.kv_peak_bytes, length * slot_bytes)
        return logits
