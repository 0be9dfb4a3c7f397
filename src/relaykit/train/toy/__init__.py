"""Training the toy pair (the shipped toy-small and toy-large), one concern a module: `config`
(shapes and budgets), `model` (build, save, load), `packing` (problems into rows), `hidden_context`
(attention masks of compressed-cache rows), `compile` (torch.compile where it can run), `stage` (one
training stage), `evaluation` and `timing` (the trained pair's properties). `pair` runs them for
the whole pair."""
