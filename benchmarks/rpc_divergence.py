"""Where RPC's greedy output departs from the full cache's, on N long toy problems (the shipped toy-large).

Usage: python rpc_divergence.py THREADS P [window=R ratio=C per_group=1 kernel=K n=N teacher=1]
Free-running (default): both caches generate, and the first differing token is shown. With teacher=1
the full cache's output is fed through the RPC cache token by token, and every position where RPC's
top-1 differs is listed (how far it is from the full cache's token, in logits)."""
import sys

import torch

from relaykit.api import default_model
from relaykit.decoding.prompt import encode_prompt
from relaykit.decoding.sequence import Sequence
from relaykit.decoding.stopping import StopConfig
from relaykit.models.kv import make_policy
from relaykit.models.loading import load_model
from relaykit.runtime.local_runner import LocalRunner
from relaykit.runtime.session import Session
from relaykit.strategies.base import get_strategy
from relaykit.toyworld.tasks import load_split

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
P = int(sys.argv[2]) if len(sys.argv) > 2 else 256
kw = dict(x.split("=") for x in sys.argv[3:])
n, teacher = int(kw.pop("n", 8)), kw.pop("teacher", "0") == "1"
kw = {k: (v == "1") if k == "per_group" else float(v) if k == "ratio" else int(v) for k, v in kw.items()}
model = load_model(default_model("large"), name="large")
tok = model.tokenizer
problems = load_split("test", n=n, long=True)
batch = [encode_prompt(tok, p.question) for p in problems]
stop = StopConfig(max_new_tokens=2600)
single = get_strategy("single")({"large": model}, stop=stop)
full = Session(single.models).generate(single, batch)
def teacher_forced():
    """Every position where RPC's top-1 departs while fed the full cache's output."""
    departing = 0
    for p, prompt, f in zip(problems, batch, full):
        runner = LocalRunner(model, "large", make_policy("rpc", interval=P, **kw))
        sequence, found = Sequence(prompt), []
        with torch.no_grad():
            for i, token in enumerate(f.token_ids):
                logits = runner.next_logits([sequence])[0]
                if int(logits.argmax()) != token:
                    found.append(f"{i}: {tok.decode([int(logits.argmax())])!r} for {tok.decode([token])!r} "
                                 f"({float(logits[token] - logits.max()):.1f}) "
                                 f"after {tok.decode(f.token_ids[max(0, i - 12):i])!r}")
                sequence.append(token, "large")
        departing += bool(found)
        print(f"--- {p.id}: {len(found)} departures in {len(f.token_ids)} tokens", *found, sep="\n   ")
    print("problems with departures", departing, "/", n)


def free_running():
    """The first token where RPC's own output departs from the full cache's."""
    rpc = Session(single.models, make_policy("rpc", interval=P, **kw)).generate(single, batch)
    ok = 0
    for p, f, r in zip(problems, full, rpc):
        a, b = f.token_ids, r.token_ids
        i = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), None)
        good = p.answer in r.text[-20:]
        ok += good
        print(f"--- {p.id} answer {p.answer} rpc_ok={good} full_len={len(a)} rpc_len={len(b)} diverge_at={i}")
        if i is not None:
            print("FULL:", repr(tok.decode(a[max(0, i - 60): i + 30])))
            print("RPC :", repr(tok.decode(b[max(0, i - 60): i + 30])))
    print("rpc ok", ok, "/", len(problems))


teacher_forced() if teacher else free_running()
