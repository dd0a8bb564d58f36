"""Which hosts may receive an API key: a graph names both a model's `base_url` and its `api_key_env`, so a
stranger's graph could otherwise send the user's `OPENAI_API_KEY` to its own server.

A key goes to a host only when:

- the variable is a provider's well-known key and the host is that provider's own API over https
  (`OPENAI_API_KEY` -> `api.openai.com`, see `PROVIDER_HOSTS`);
- or the user named the host: `--endpoint URL` or `--set models.<m>.base_url=URL` on the command line,
  `--allow-key-host HOST` / `allow_key_hosts=[...]`, the `SYNTHLOOM_KEY_HOSTS` environment variable (one
  line in a shell profile for the user's own gateways), or `--trust-graph` (every host the graph names).

A model that sends no key (no `api_key_env`: local servers, the embedded model) is not concerned. The check
runs when a graph is built, so `validate` refuses the same graphs `run` does and lists where each key goes.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from yarl import URL

from ..errors import ConfigError

KEY_HOSTS_ENV = "SYNTHLOOM_KEY_HOSTS"


class KeyedModel(Protocol):
    """What the check reads of a model (config's `ModelConfig`; the sandbox sits below config)."""

    @property
    def backend(self) -> str: ...
    @property
    def api_key_env(self) -> str | None: ...
    def urls(self) -> list[str]: ...

PROVIDER_HOSTS: dict[str, tuple[str, ...]] = {
    "OPENAI_API_KEY": ("api.openai.com",),
    "ANTHROPIC_API_KEY": ("api.anthropic.com",),
    "GROQ_API_KEY": ("api.groq.com",),
    "MISTRAL_API_KEY": ("api.mistral.ai",),
    "TOGETHER_API_KEY": ("api.together.xyz",),
    "OPENROUTER_API_KEY": ("openrouter.ai",),
    "DEEPSEEK_API_KEY": ("api.deepseek.com",),
    "FIREWORKS_API_KEY": ("api.fireworks.ai",),
    "GEMINI_API_KEY": ("generativelanguage.googleapis.com",),
    "XAI_API_KEY": ("api.x.ai",),
    "HF_TOKEN": ("router.huggingface.co", "api-inference.huggingface.co"),
}
"""Well-known key variables and the only hosts (over https) they go to without the user naming one."""


def host_of(url: str) -> str:
    """The host a request to `url` reaches, as aiohttp parses it (userinfo and port left out), lowercased."""
    try:
        host = URL(url).host
    except (ValueError, TypeError):
        host = None
    return (host or "").lower().rstrip(".")


def hosts_from_environment() -> tuple[str, ...]:
    return tuple(host.strip().lower() for host in os.environ.get(KEY_HOSTS_ENV, "").split(",") if host.strip())


@dataclass(frozen=True)
class KeyUse:
    """One API key a graph would send: the model, the variable, the host, and the rule that lets it go."""

    model: str
    env: str
    host: str
    reason: str


@dataclass(frozen=True)
class KeyHosts:
    """The hosts the user chose for keys (see the module docstring); `trust_graph` lets every host in."""

    named: tuple[str, ...] = ()
    trust_graph: bool = False

    def check(self, models: Mapping[str, KeyedModel], where: dict[str, str]) -> list[KeyUse]:
        """Where each model's key goes; `ConfigError` (one line, at `where[model]`) for a host nobody chose."""
        uses: list[KeyUse] = []
        for name, model in models.items():
            if model.backend != "openai" or not model.api_key_env:
                continue
            for url in model.urls():
                uses.append(self._one(name, model.api_key_env, url, where.get(name, "")))
        return uses

    def _one(self, model: str, env: str, url: str, where: str) -> KeyUse:
        host = host_of(url)
        if host and host in self.named:
            return KeyUse(model, env, host, "a host you named")
        provider = PROVIDER_HOSTS.get(env, ())
        if host in provider and URL(url).scheme == "https":
            return KeyUse(model, env, host, "the provider's own host")
        if self.trust_graph:
            return KeyUse(model, env, host, "--trust-graph")
        expected = f" (its provider's host is {', '.join(provider)} over https)" if provider else ""
        raise ConfigError(f"the graph would send the API key in ${env} to {host or url!r}{expected}; if that is "
                          f"your server, allow it with --allow-key-host {host or 'HOST'} (or {KEY_HOSTS_ENV}), "
                          f"point the model there with --endpoint, or pass --trust-graph for a graph you wrote",
                          where=where, key=f"models.{model}.api_key_env")


def key_hosts(named: Iterable[str] = (), trust_graph: bool = False) -> KeyHosts:
    """The user's choice: hosts passed in, plus `SYNTHLOOM_KEY_HOSTS`."""
    hosts = [host_of(item) if "://" in item else item.strip().lower().rstrip(".") for item in named]
    return KeyHosts(tuple(dict.fromkeys([*hosts, *hosts_from_environment()])), trust_graph)
