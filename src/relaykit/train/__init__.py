"""Training shared by every trainer: one loop (`loop.train`) taking the loss as a function, SFT
with a per-token loss mask (`sft`), GRPO (`grpo`), and the recipes built on them (`relayllm`)."""
