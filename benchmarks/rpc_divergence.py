"""Where RPC's greedy output first departs from the full cache's, on 8 long toy problems.

Usage: python rpc_divergence.py THREADS P [window=R ratio=C per_group=1] (the shipped toy-large)."""
import sys, torch
from relaykit.cli import default_model
from relaykit.models.loading import load_model
from relaykit.models.kv import make_policy
from relaykit.strategies.base import get_strategy
from relaykit.decoding.stopping import StopConfig
from relaykit.decoding.prompt import encode_prompt
from relaykit.toyworld.tasks import load_split
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
P = int(sys.argv[2]) if len(sys.argv) > 2 else 256
kw = dict(x.split("=") for x in sys.argv[3:])
kw = {k: (v == "1") if k == "per_group" else float(v) if k == "ratio" else int(v) for k, v in kw.items()}
model = load_model(default_model("large"), name="large")
tok = model.tokenizer
problems = load_split("test", n=8, long=True)
batch = [encode_prompt(tok, p.question) for p in problems]
stop = StopConfig(max_new_tokens=2600)
full = get_strategy("single")({"large": model}, stop=stop).generate(batch)
rpc = get_strategy("single")({"large": model}, stop=stop, kv_policy=make_policy("rpc", interval=P, **kw)).generate(batch)
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
