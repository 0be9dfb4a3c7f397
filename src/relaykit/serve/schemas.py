"""Request and response bodies of the OpenAI-compatible API (the subset relaykit honours).

Request models forbid unknown fields, so a field relaykit does not support is refused by name
instead of being silently ignored. Defaults are OpenAI's: temperature 1, top_p 1, n 1.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False  # a last chunk with the usage and no choices


class RelaykitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provenance: bool = False  # each choice also carries the writer ("large", "small") of every token
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="strategy options, as NAME[option=value ...] gives them: {\"speculative\": 8}")


class GenerationRequest(BaseModel):
    """The fields both endpoints share."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a strategy (`relaygen`) or a variant (`relaygen[speculative=8]`); "
                                   "see GET /v1/models")
    temperature: float = Field(1.0, ge=0, le=2, description="0 (or below 1e-5): greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="relaykit extra: keep the k most likely tokens (0: off)")
    seed: int | None = Field(None, ge=0, le=2**53)  # choice j of n samples with seed + j; exact as a JSON number
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    relaykit: RelaykitOptions | None = Field(
        None, description="relaykit extra: {\"provenance\": true, \"options\": {...}}")

    @property
    def provenance(self) -> bool:
        return self.relaykit is not None and self.relaykit.provenance

    @property
    def options(self) -> dict:
        return self.relaykit.options if self.relaykit is not None else {}

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's and vLLM's default --max-logprobs

Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(GenerationRequest):
    prompt: (Text | Annotated[list[Text], Field(min_length=1)]
             | TokenIds | Annotated[list[TokenIds], Field(min_length=1)])
    max_tokens: int | None = Field(None, ge=0, description="0 only with echo: score the prompt, write nothing")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS,
                                 description="log-probabilities of each token and of the n most likely (0: its own)")
    echo: bool = Field(False, description="the text and the log-probabilities start with the prompt's")
    prompt_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS,
                                        description="vLLM extra: each prompt token's log-probability, rank and the "
                                                    "n most likely")
    return_tokens_as_token_ids: bool = Field(False, description="vLLM extra: tokens as \"token_id:N\"")

    def prompts(self) -> list[str | list[int]]:
        """Text prompts or token-id prompts, in order."""
        prompt = self.prompt
        if isinstance(prompt, str) or isinstance(prompt[0], int):
            return [prompt]  # type: ignore[list-item]
        return list(prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def for_template(self) -> dict:
        """The message as chat templates take it: content as one string."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": self.role, "content": content}


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = Field(False, description="each written token's log-probability")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS,
                                     description="with logprobs: the n most likely tokens at each position")

    def token_budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class ModelUsage(BaseModel):
    prefill_tokens: int
    decode_tokens: int
    forward_calls: int
    flops: float


class RelaykitUsage(BaseModel):
    models: dict[str, ModelUsage]  # per role: what each model spent
    large_token_share: float | None  # share of the written tokens that the large model wrote


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    relaykit: RelaykitUsage


class ChoiceExtras(BaseModel):
    provenance: list[str] | None = Field(None, description="the writer of every token, when asked")
    logprob_models: list[str] | None = Field(None, description="with logprobs: the model that gave each token's "
                                             "log-probabilities (the token's writer; the first model for the prompt)")
    stop_text: str | None = Field(None, description="the text left out from the stop string on (the stop string and "
                                  "the rest of its token), so that a client can go on from exactly there")


class Choice(BaseModel):
    """What a completion's and a chat completion's choices share."""

    index: int
    finish_reason: Literal["stop", "length"]
    relaykit: ChoiceExtras | None = None


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy shape, one entry per token (the prompt's first, with echo)."""

    tokens: list[str]
    token_logprobs: list[float | None]  # None: the first prompt token
    top_logprobs: list[dict[str, float] | None]  # the most likely tokens and the token itself
    text_offset: list[int]


class PromptLogprob(BaseModel):
    logprob: float
    rank: int  # 1: the most likely
    decoded_token: str


class CompletionChoice(Choice):
    text: str
    logprobs: CompletionLogprobs | None = None
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = Field(
        None, description="vLLM's shape: per prompt token (None for the first), token id -> its entry, for the "
                          "token itself and the most likely")
    stop_reason: str | None = Field(
        None, description="the stop string that ended the text (left out of it), as vLLM names it")


class Answer(BaseModel):
    """What a completion and a chat completion share."""

    id: str
    created: int
    model: str
    usage: Usage


class Completion(Answer):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class ChatChoice(Choice):
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None


class ChatCompletion(Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "relaykit"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
