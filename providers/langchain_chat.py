"""The `langchain:` kind: any langchain-core chat model behind the provider interface.

Specs: `langchain:<provider>:<model>` builds the model with langchain's `init_chat_model("<provider>:<model>")`
(needs the `langchain` package and the provider's integration package, e.g. langchain-openai);
`langchain:<module>:<Class>` imports `<Class>` from `<module>` and calls it with the models file entry's
`kwargs`. A spec is the class form when its last part is a Python identifier starting with a capital letter.

Messages convert both ways: system/user/assistant dicts become SystemMessage/HumanMessage/AIMessage; an image
part `{"type": "image", "data": <base64>, "mime": ...}` becomes an OpenAI-style `image_url` data-URL block
(accepted by langchain's chat integrations), and langchain messages (any block format langchain-core can
normalise) come back as dicts with text and image parts. Errors whose class name says rate limit, timeout,
connection or server error are retried; others fail the call.
"""

from __future__ import annotations

import asyncio
import importlib

from skillweave.errors import ConfigError
from skillweave.providers.core import ChatRequest, ChatResult, Provider, RetryableError

_RETRYABLE_WORDS = ("ratelimit", "timeout", "connection", "internalserver", "serviceunavailable", "overloaded",
                    "apierror5")


def is_class_spec(spec: str) -> bool:
    module, _, name = spec.rpartition(":")
    return bool(module) and name.isidentifier() and name[0].isupper()


def build_chat_model(spec: str, kwargs: dict | None = None):
    """The langchain chat model a spec names (see the module docstring)."""
    kwargs = dict(kwargs or {})
    if is_class_spec(spec):
        module_name, _, class_name = spec.rpartition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"langchain:{spec}: cannot import {class_name} from {module_name} ({exc})") from None
        try:
            return cls(**kwargs)
        except Exception as exc:  # a pydantic validation error of the model's own fields
            raise ConfigError(f"langchain:{spec}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if ":" not in spec:
        raise ConfigError(f"langchain:{spec}: expected langchain:<provider>:<model> or langchain:<module>:<Class>")
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise ConfigError(f"langchain:{spec} needs the langchain package (pip install langchain and the "
                          "provider's integration, e.g. langchain-openai), or use langchain:<module>:<Class>") from None
    try:
        return init_chat_model(spec, **kwargs)
    except Exception as exc:
        raise ConfigError(f"langchain:{spec}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def to_langchain(messages: list[dict]) -> list:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    classes = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": f"data:{p.get('mime', 'image/png')};base64,{p['data']}"}}
                if p.get("type") == "image" else {"type": "text", "text": p.get("text", "")}
                for p in content
            ]
        out.append(classes[m["role"]](content=content))
    return out


def from_langchain(messages: list) -> list[dict]:
    """Langchain messages back to the project's dicts (text, and image parts for base64 images)."""
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    out = []
    for message in messages:
        content = message.content
        if isinstance(content, str):
            out.append({"role": roles.get(message.type, message.type), "content": content})
            continue
        parts = []
        for block in message.content_blocks:
            if block.get("type") == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif block.get("type") == "image" and block.get("base64"):
                parts.append({"type": "image", "data": block["base64"], "mime": block.get("mime_type", "image/png")})
        out.append({"role": roles.get(message.type, message.type), "content": parts})
    return out


def reply_text(message) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in message.content_blocks if b.get("type") == "text")


class LangChainProvider(Provider):
    provider = "langchain"

    def __init__(self, model: str, *, kwargs: dict | None = None, **kw):
        super().__init__(model, **kw)
        self.chat_model = build_chat_model(model, kwargs)

    @property
    def spec(self) -> str:
        return f"langchain:{self.model}"

    async def _one(self, messages: list, request: ChatRequest):
        call = {"temperature": request.temperature, "max_tokens": request.max_tokens}
        call.update({k: v for k, v in request.options.items() if k in ("seed", "top_p")})
        try:
            return await self.chat_model.ainvoke(messages, **call)
        except Exception as exc:
            name = type(exc).__name__.lower()
            if any(word in name for word in _RETRYABLE_WORDS):
                raise RetryableError(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def _chat(self, request: ChatRequest) -> ChatResult:
        messages = to_langchain(request.messages)
        replies = await asyncio.gather(*(self._one(messages, request) for _ in range(request.n)))
        usages = [getattr(r, "usage_metadata", None) or {} for r in replies]
        known = all(u.get("input_tokens") is not None for u in usages)
        return ChatResult(texts=[reply_text(r) for r in replies],
                          input_tokens=sum(u.get("input_tokens", 0) for u in usages) if known else None,
                          output_tokens=sum(u.get("output_tokens", 0) for u in usages) if known else None)
