"""The suffix index of SuffixDecoding (Oliaro et al., NeurIPS 2025): every substring of at most
`depth` tokens of the documents it holds, as a trie with counts, so that the continuations of a
context's suffix are looked up with their frequencies. A document grows token by token in O(depth)
work per token; `propose` finds the longest suffix of a context that occurred with a continuation
and follows the most frequent continuation while its empirical probability holds."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Proposal:
    """Draft `tokens` with their cumulative empirical probabilities `probs` (non-increasing), after a
    context suffix of `match` tokens that occurred `seen` times with a continuation."""

    tokens: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    match: int = 0
    seen: int = 0

    def cut(self, k: int) -> "Proposal":
        return Proposal(self.tokens[:k], self.probs[:k], self.match, self.seen)


@dataclass
class _Document:
    tokens: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # ends[i]: the node of its last i + 1 tokens


NONE = -1  # no node, no token


class SuffixIndex:
    """Documents (by key) indexed as a depth-bounded suffix trie with counts. Nodes are integers
    (node 0 is the root) over flat lists; most nodes have one child, held in the lists (`token`,
    `child`), and only nodes with several have a dict (`branches`). So an index costs ~70 bytes a
    node (16,384 toy tokens: 220 thousand nodes, 16 MB; a dict a node took 61 MB) and holds no
    objects for the garbage collector to walk (a tree of objects slowed every forward)."""

    def __init__(self, depth: int = 24):
        self.depth = depth
        self.count = [0]  # occurrences of the substring a node spells
        self.followed = [0]  # of those, occurrences followed by a token (its children's counts summed)
        self.token = [NONE]  # the token of a node's only child (NONE: no child, or several)
        self.child = [NONE]  # that child
        self.branches: dict[int, dict[int, int]] = {}  # node -> token -> child, for nodes with several children
        self.free: list[int] = []  # nodes to reuse
        self.documents: dict = {}

    def sync(self, key, tokens: list[int], same: int | None = None) -> None:
        """Make document `key` hold `tokens`; `same`: how many of its first tokens are known to be
        unchanged (default: every token it holds)."""
        document = self.documents.setdefault(key, _Document())
        keep = min(len(document.tokens), len(tokens), len(document.tokens) if same is None else same)
        if keep < len(document.tokens):
            self._truncate(document, keep)
        for token in tokens[len(document.tokens) :]:
            self._append(document, token)

    def remove(self, key) -> None:
        document = self.documents.pop(key, None)
        if document is not None:
            self._truncate(document, 0)

    def ends(self, context: list[int], key=None) -> list[int]:
        """The nodes of the context's suffixes held here, shortest first (of document `key`'s own
        end when the context is that document)."""
        document = self.documents.get(key) if key is not None else None
        return list(document.ends) if document is not None else self._ends(context)

    def advance(self, ends: list[int], token: int) -> list[int]:
        """`ends` after the context grows by `token`."""
        grown, branches, only, child_of = [], self.branches, self.token, self.child
        for node in (0, *ends[: self.depth - 1]):
            several = branches.get(node)
            child = several.get(token, NONE) if several is not None else child_of[node] if only[node] == token else NONE
            if child == NONE:
                break  # a longer suffix occurs only where this one does
            grown.append(child)
        return grown

    def continuation(self, ends: list[int]) -> tuple[float, int, int, int]:
        """(probability, match length, token, occurrences): the most frequent token after the
        longest suffix that occurred with a continuation, with its empirical probability; (0, 0,
        -1, 0) when none did."""
        for length in range(len(ends), 0, -1):
            node = ends[length - 1]
            seen = self.followed[node]
            if seen:
                several = self.branches.get(node)
                if several is None:  # one child: it followed every time
                    return 1.0, length, self.token[node], seen
                token, child = max(several.items(), key=lambda item: self.count[item[1]])
                return self.count[child] / seen, length, token, seen
        return 0.0, 0, -1, 0

    def get(self, node: int, token: int) -> int:
        """The child of `node` by `token` (NONE: none)."""
        branches = self.branches.get(node)
        if branches is not None:
            return branches.get(token, NONE)
        return self.child[node] if self.token[node] == token else NONE

    def _ends(self, context: list[int]) -> list[int]:
        """The nodes of the context's suffixes that occur here, shortest first."""
        ends: list[int] = []
        for length in range(1, min(self.depth, len(context)) + 1):
            node = 0
            for token in context[len(context) - length :]:
                node = self.get(node, token)
                if node == NONE:
                    return ends
            ends.append(node)
        return ends

    def _append(self, document: _Document, token: int) -> None:
        count, followed, branches, only, child_of = self.count, self.followed, self.branches, self.token, self.child
        ends = []
        for node in (0, *document.ends[: self.depth - 1]):
            several = branches.get(node)
            child = several.get(token, NONE) if several is not None else child_of[node] if only[node] == token else NONE
            if child == NONE:
                child = self._add(node, token)
            count[child] += 1
            followed[node] += 1
            ends.append(child)
        document.tokens.append(token)
        document.ends = ends

    def _add(self, node: int, token: int) -> int:
        """A new child of `node` by `token`."""
        if self.free:
            new = self.free.pop()
        else:
            new = len(self.count)
            for values, value in ((self.count, 0), (self.followed, 0), (self.token, NONE), (self.child, NONE)):
                values.append(value)
        branches = self.branches.get(node)
        if branches is not None:
            branches[token] = new
        elif self.child[node] == NONE:
            self.token[node], self.child[node] = token, new
        else:
            self.branches[node] = {self.token[node]: self.child[node], token: new}
            self.token[node] = self.child[node] = NONE
        return new

    def _drop(self, node: int, token: int) -> None:
        """Forget the child of `node` by `token` (its count fell to 0; so did its children's)."""
        self.free.append(self.get(node, token))
        branches = self.branches.get(node)
        if branches is None:
            self.token[node] = self.child[node] = NONE
            return
        del branches[token]
        if len(branches) == 1:
            ((self.token[node], self.child[node]),) = branches.items()
            del self.branches[node]

    def _truncate(self, document: _Document, length: int) -> None:
        """Take back the substrings that end at a position >= `length`."""
        tokens = document.tokens
        for start in range(max(0, length - self.depth + 1), len(tokens)):
            path = [0]
            for token in tokens[start : min(start + self.depth, len(tokens))]:
                path.append(self.get(path[-1], token))
            for depth in range(len(path) - 1, max(0, length - start), -1):  # path[depth] ends at start + depth - 1
                parent, child = path[depth - 1], path[depth]
                self.count[child] -= 1
                self.followed[parent] -= 1
                if not self.count[child]:
                    self._drop(parent, tokens[start + depth - 1])
        del tokens[length:]
        document.ends = self._ends(tokens)


def propose(cursors: list[tuple[SuffixIndex, list[int]]], limit: int, spec_factor: float = 1.0,
            min_prob: float = 0.1) -> tuple[Proposal, int]:
    """Up to `limit` drafts after a context from several indexes, each given with the nodes of the
    context's suffixes it holds (`SuffixIndex.ends`). Each draft is the most frequent continuation
    of the longest suffix that occurred with one, taken from the index where it is most probable;
    drafting stops once the drafts' cumulative empirical probability is below `min_prob`, or after
    `spec_factor` x the first match's length drafts (SuffixDecoding's MAX_SPEC = alpha p). Returns
    the proposal and which cursor gave its first draft."""
    proposal, first, prob = Proposal(), 0, 1.0
    ends = [e for _, e in cursors]
    while len(proposal.tokens) < limit:
        p, match, token, seen, source = max((*index.continuation(e), i) for i, ((index, _), e) in
                                            enumerate(zip(cursors, ends)))
        if not proposal.tokens:
            proposal.match, proposal.seen, first = match, seen, source
            limit = min(limit, int(spec_factor * match))
        prob *= p
        if not match or prob < min_prob or len(proposal.tokens) >= limit:
            break
        proposal.tokens.append(token)
        proposal.probs.append(prob)
        ends = [index.advance(e, token) for (index, _), e in zip(cursors, ends)]
    return proposal, first


class RecentOutputs:
    """A bounded cache of finished outputs for drafting across requests (SuffixDecoding's global
    tree): at most `capacity` tokens, the oldest outputs evicted first. Outputs are indexed when
    the index is first read after they arrive, so a workload that never drafts never pays for it."""

    def __init__(self, capacity: int, depth: int = 24):
        self.capacity = capacity
        self._index = SuffixIndex(depth)
        self.outputs: OrderedDict[int, list[int]] = OrderedDict()  # key -> tokens, oldest first
        self.pending: list[int] = []  # keys not indexed yet
        self.held = 0
        self._next = 0

    @property
    def index(self) -> SuffixIndex:
        for key in self.pending:
            self._index.sync(key, self.outputs[key])
            self._index.documents[key].ends = []  # finished: it never grows
        self.pending = []
        return self._index

    def add(self, tokens: list[int]) -> None:
        tokens = tokens[-self.capacity :] if self.capacity else []
        if not tokens:
            return
        while self.outputs and self.held + len(tokens) > self.capacity:
            key, evicted = self.outputs.popitem(last=False)
            if key in self.pending:
                self.pending.remove(key)
            else:
                self._index.remove(key)
            self.held -= len(evicted)
        self.outputs[self._next] = list(tokens)
        self.pending.append(self._next)
        self.held += len(tokens)
        self._next += 1
