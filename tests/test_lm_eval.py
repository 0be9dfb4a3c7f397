"""lm-evaluation-harness scores `relaykit serve` as it scores the same checkpoint in-process: its
`local-completions` model (token-id prompts, echo + logprobs) against its `hf` model, on a local
multiple-choice task and a local greedy generation task. Nothing is downloaded."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("uvicorn")

from conftest import build_checkpoint  # noqa: E402
from relaykit import api  # noqa: E402
from relaykit.serve import create_app, serving  # noqa: E402

CHOICES = [
    {"question": "2 + 3 =", "choices": [" 5", " 6", " 23"], "answer": 0},
    {"question": "The sky is", "choices": [" blue", " green", " loud"], "answer": 0},
    {"question": "7 * 6 = 4", "choices": ["2", "3", "8"], "answer": 0},
    {"question": "Hello,", "choices": [" world!", " there", " x"], "answer": 1},
]
PROMPTS = [{"question": text, "answer": ""} for text in ("Once upon a", "1 + 1 = ", "abc", "Q: why?\nA:")]

MULTIPLE_CHOICE = """task: relaykit_choice
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: multiple_choice
target_delimiter: ""
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""
GENERATION = """task: relaykit_generation
dataset_path: json
dataset_kwargs:
  data_files: {data}
test_split: train
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: answer
generation_kwargs:
  until: ["\\n\\n"]
  do_sample: false
  max_gen_toks: 12
metric_list:
  - metric: exact_match
"""


def greedy(model, text: str, tokens: int) -> str:
    """The model's greedy continuation of `text`."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    start = len(ids)
    with torch.no_grad():
        for _ in range(tokens):
            ids.append(int(model.hf(torch.tensor([ids])).logits[0, -1].argmax()))
    return model.tokenizer.decode(ids[start:])


def write_tasks(folder, model) -> None:
    """The two tasks; one question's choices include the model's greedy continuation."""
    choices = [*CHOICES, {"question": "Why", "choices": [" not", greedy(model, "Why", 2)], "answer": 1}]
    for name, rows, template in (("choice", choices, MULTIPLE_CHOICE), ("generation", PROMPTS, GENERATION)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (folder / f"{name}.yaml").write_text(template.format(data=data))


def responses(evaluation: dict, task: str) -> dict[int, list]:
    """doc id -> the model's filtered responses."""
    return {sample["doc_id"]: sample["filtered_resps"] for sample in evaluation["samples"][task]}


def test_lm_eval_scores_the_server_as_the_checkpoint(tmp_path, monkeypatch):
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = build_checkpoint(tmp_path / "model", layers=2, hidden=64, seed=3)
    models = api.load_models({"large": str(folder)})
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_tasks(tasks, models["large"])
    manager = TaskManager(include_path=str(tasks))
    names = ["relaykit_choice", "relaykit_generation"]
    common = {"tasks": names, "task_manager": manager, "log_samples": True, "random_seed": 0, "numpy_random_seed": 0,
              "torch_random_seed": 0, "fewshot_random_seed": 0}
    in_process = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", device="cpu",
                                         batch_size=1, **common)
    with serving(create_app(models)) as url:
        served = lm_eval.simple_evaluate(
            model="local-completions", batch_size=2,
            model_args=(f"base_url={url}/v1/completions,model=large,tokenizer={folder},"
                        "tokenizer_backend=huggingface,tokenized_requests=True,max_retries=1"), **common)

    expected, got = responses(in_process, names[0]), responses(served, names[0])
    assert sorted(got) == sorted(expected) == list(range(len(CHOICES) + 1))
    for doc in expected:
        for (want, want_greedy), (have, have_greedy) in zip(expected[doc], got[doc]):
            assert have == pytest.approx(want, abs=1e-3) and have_greedy == want_greedy
    assert got[len(CHOICES)][1][1]  # the greedy continuation is greedy for both
    expected, got = responses(in_process, names[1]), responses(served, names[1])
    assert got == expected and len(got) == len(PROMPTS) and any(texts[0] for texts in got.values())
