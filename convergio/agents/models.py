"""Build an AutoGen ``ChatCompletionClient`` from the one ``CONVERGIO_MODEL`` setting.

Accepted values::

    offline                                  the built-in deterministic client (default)
    openai:<model>                           OpenAI, key in CONVERGIO_OPENAI_API_KEY
    azure:<deployment>                       Azure OpenAI, CONVERGIO_AZURE_OPENAI_ENDPOINT / _API_KEY
    anthropic:<model>                        Anthropic, key in CONVERGIO_ANTHROPIC_API_KEY
    ollama:<model>                           a local Ollama server at CONVERGIO_OLLAMA_HOST
    openai-compatible:<base_url>#<model>     any OpenAI-compatible server (vLLM, llama.cpp, ...)
    local | local:smollm2 | local:<file.gguf>  a GGUF model run in-process by llama-cpp-python
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo
from pydantic import BaseModel

from convergio.settings import Settings

Provider = Literal["offline", "openai", "azure", "anthropic", "ollama", "openai-compatible", "local"]
PROVIDERS: tuple[str, ...] = ("offline", "openai", "azure", "anthropic", "ollama", "openai-compatible", "local")

# For models autogen-ext does not know by name (custom deployments, local servers).
GENERIC_MODEL_INFO = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=True,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
    multiple_system_messages=True,
)


class ModelConfigError(ValueError):
    """``CONVERGIO_MODEL`` or a setting it needs is wrong; the message names the setting."""


class ModelSpec(BaseModel):
    """A parsed ``CONVERGIO_MODEL`` value."""

    provider: Provider
    model: str
    base_url: str | None = None

    @property
    def label(self) -> str:
        """How reports name the model, e.g. ``openai:gpt-4o-mini``."""
        return "offline" if self.provider == "offline" else f"{self.provider}:{self.model}"


def parse_model_setting(value: str, setting: str = "CONVERGIO_MODEL") -> ModelSpec:
    """``setting``: where the value was given (``--model`` on the command line), which an
    error names so the user fixes what they typed."""
    value = value.strip()
    if value == "offline":
        return ModelSpec(provider="offline", model="convergio-offline")
    if value == "local":
        return ModelSpec(provider="local", model="smollm2")
    provider, sep, rest = value.partition(":")
    if not sep or provider not in PROVIDERS or provider == "offline":
        raise ModelConfigError(
            f"{setting}={value!r}: unknown provider {provider!r}; "
            "use offline, openai:<model>, azure:<deployment>, anthropic:<model>, ollama:<model> "
            "openai-compatible:<base_url>#<model> or local[:smollm2|:<file.gguf>]"
        )
    if provider == "openai-compatible":
        base_url, hash_sign, model = rest.rpartition("#")
        if not hash_sign or not base_url.startswith(("http://", "https://")) or not model:
            raise ModelConfigError(
                f"{setting}={value!r}: expected openai-compatible:<http(s) base_url>#<model>"
            )
        return ModelSpec(provider="openai-compatible", model=model, base_url=base_url)
    if not rest.strip():
        raise ModelConfigError(f"{setting}={value!r}: the model name after '{provider}:' is missing")
    return ModelSpec(provider=provider, model=rest.strip())  # type: ignore[arg-type]


def run_model_allowed(settings: Settings, model: str) -> bool:
    """May a caller of the API run on ``model``? Only CONVERGIO_MODEL and CONVERGIO_RUN_MODELS:
    an ``openai-compatible:<url>`` would otherwise send prompts and the server's key anywhere."""
    return model.strip() in {settings.model, *(choice.strip() for choice in settings.run_models)}


def _require(value: str | None, needed: str, spec: ModelSpec, setting: str) -> str:
    if not value:
        raise ModelConfigError(f"{needed} is not set; {setting}={spec.label} needs it")
    return value


def build_model_client(
    settings: Settings, model: str | None = None, *, setting: str = "CONVERGIO_MODEL"
) -> ChatCompletionClient:
    """The client for ``model`` (default: ``settings.model``). Makes no network call.
    ``setting``: where the model was given, for errors (see :func:`parse_model_setting`)."""
    spec = parse_model_setting(model or settings.model, setting)
    if spec.provider == "offline":
        from convergio.agents.offline import OfflineChatCompletionClient

        return OfflineChatCompletionClient(latency_ms=settings.offline_latency_ms)
    if spec.provider == "local":
        from convergio.agents.local_llm import LocalChatCompletionClient

        return LocalChatCompletionClient(
            spec.model, n_ctx=settings.local_n_ctx, max_tokens=settings.local_max_tokens,
            n_threads=settings.local_threads,
        )

    # autogen-ext counts tokens with tiktoken, which must not try to download.
    from convergio.agents.tokens import install_offline_tiktoken_cache

    install_offline_tiktoken_cache()
    if spec.provider == "openai":
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        api_key = _require(settings.openai_api_key, "CONVERGIO_OPENAI_API_KEY", spec, setting)
        return OpenAIChatCompletionClient(model=spec.model, api_key=api_key, **_info_if_unknown_openai(spec))
    if spec.provider == "openai-compatible":
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        return OpenAIChatCompletionClient(
            model=spec.model,
            base_url=spec.base_url,
            api_key=settings.openai_api_key or "not-needed",
            model_info=GENERIC_MODEL_INFO,
        )
    if spec.provider == "azure":
        from autogen_ext.models.openai import AzureOpenAIChatCompletionClient

        endpoint = _require(settings.azure_openai_endpoint, "CONVERGIO_AZURE_OPENAI_ENDPOINT", spec, setting)
        api_key = _require(settings.azure_openai_api_key, "CONVERGIO_AZURE_OPENAI_API_KEY", spec, setting)
        return AzureOpenAIChatCompletionClient(
            azure_deployment=spec.model,
            model=spec.model,
            azure_endpoint=endpoint,
            api_key=api_key,
            api_version=settings.azure_openai_api_version,
            **_info_if_unknown_openai(spec),
        )
    if spec.provider == "anthropic":
        from autogen_ext.models.anthropic import AnthropicChatCompletionClient

        api_key = _require(settings.anthropic_api_key, "CONVERGIO_ANTHROPIC_API_KEY", spec, setting)
        return AnthropicChatCompletionClient(model=spec.model, api_key=api_key)
    from autogen_ext.models.ollama import OllamaChatCompletionClient
    from autogen_ext.models.ollama._model_info import get_info as ollama_info

    return OllamaChatCompletionClient(
        model=spec.model, host=settings.ollama_host, **_info_if_unknown(ollama_info, spec)
    )


def _info_if_unknown(get_info: Callable[[str], ModelInfo], spec: ModelSpec) -> dict[str, ModelInfo]:
    """autogen-ext refuses model names it has no capability table for; give those ours."""
    try:
        get_info(spec.model)
    except (KeyError, ValueError):
        return {"model_info": GENERIC_MODEL_INFO}
    return {}


def _info_if_unknown_openai(spec: ModelSpec) -> dict[str, ModelInfo]:
    from autogen_ext.models.openai._model_info import get_info

    return _info_if_unknown(get_info, spec)


def validate_model_setting(settings: Settings, setting: str = "CONVERGIO_MODEL") -> ModelSpec:
    """Fail at start-up, not at the first turn: parse and build the client once. ``setting``:
    where ``settings.model`` came from, for errors (``--model`` when the command line set it)."""
    spec = parse_model_setting(settings.model, setting)
    if spec.provider == "local":
        from convergio.agents.local_llm import require_llama_cpp, resolve_gguf_path

        # Installed and present is enough here: the model loads in the worker that uses it.
        require_llama_cpp(setting)
        resolve_gguf_path(spec.model, setting)
        return spec
    build_model_client(settings, setting=setting)
    return spec
