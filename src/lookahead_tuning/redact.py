"""Secrets never reach a file or the terminal: URL credentials are stripped, known keys are masked.

Two layers, because a secret can arrive where no one expects it (a judge endpoint that echoes the
key in a 200 answer, a proxy that repeats the URL in an error):

- :func:`redact_url` removes the ``user:password@`` part of a URL and masks credential-like query
  parameters (``?api_key=...``); what is recorded (``metrics.json``, ``config.yaml``, messages) is the
  redacted URL, while the connection itself still uses the URL as given.
- :func:`register` adds a secret (an API key, a URL password) to this process's list; :func:`scrub`
  replaces every registered secret by ``***``. Error rendering, the atomic writers, the resumable
  logs and the judge cache pass their text through it, so a registered secret cannot be written.
  Credentials enter the list where the process meets them: a server's key and URL in
  :func:`lookahead_tuning.endpoint.credentials` (the judge and the generation backend), a started
  server's credential-named environment variables and flags in :func:`register_named` /
  :func:`register_command` (a run's ``eval.generation``).
"""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Shorter strings are not masked: a placeholder key such as "x" or "EMPTY" (servers that check no
# key) would otherwise be cut out of every text.
MIN_SECRET = 6
_SECRET_PARAMS = re.compile(r"(?i)^(api[-_]?key|key|token|access[-_]?token|secret|password|passwd|pwd|sig|"
                            r"signature|auth|authorization)$")
# Names that say their value is a credential: an environment variable (VLLM_API_KEY, HF_TOKEN) or a
# command-line flag (--api-key) in a server's settings.
_SECRET_NAMES = re.compile(r"(?i)(api[-_]?key|token|secret|passw(or)?d|passwd|pwd|auth|credential)")
_SECRETS: set[str] = set()


def register(secret: str | None) -> None:
    """Mask ``secret`` in everything this process writes or prints from now on."""
    if secret and len(secret) >= MIN_SECRET:
        _SECRETS.add(secret)


def register_named(name: str, value: str | None) -> None:
    """Register ``value`` (see :func:`register`) when ``name`` says it is a credential."""
    if _SECRET_NAMES.search(name or ""):
        register(value)


def register_command(command: str | None) -> None:
    """Register the values of a command line's credential flags (``--api-key KEY``, ``--token=KEY``):
    a server command written into a run's config must not carry its key into what the run writes."""
    import shlex

    try:
        words = shlex.split(command or "")
    except ValueError:  # not shell words: refused where the command is used
        return
    for i, word in enumerate(words):
        if not word.startswith("-"):
            continue
        flag, equals, value = word.partition("=")
        if not equals:
            value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else ""
        register_named(flag, value)


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_bytes(data: bytes) -> bytes:
    """:func:`scrub` for UTF-8 bytes (the writers' hot path: nothing to do without secrets)."""
    for secret in _SECRETS:
        raw = secret.encode("utf-8", "surrogatepass")
        if raw in data:
            data = data.replace(raw, MASK.encode())
    return data


def url_secrets(url: str) -> list[str]:
    """The credentials a URL carries: its user info (a token can stand as the user name), the Basic
    token HTTP clients make of it, and credential-like query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [s for s in (parts.password, parts.username) if s]
    if parts.username or parts.password:  # what HTTP clients send for them: "Authorization: Basic <this>"
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        found.append(base64.b64encode(pair.encode("utf-8")).decode("ascii"))
    found += [value for key, value in parse_qsl(parts.query, keep_blank_values=False) if _SECRET_PARAMS.match(key)]
    return found


def redact_url(url: str | None) -> str | None:
    """``url`` without ``user:password@`` and with credential-like query values masked."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL we can take apart: show none of it but the scheme
        return url.split(":", 1)[0] + "://" + MASK if "://" in url else MASK
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if parts.username is None and parts.password is None and not any(_SECRET_PARAMS.match(k) for k, _ in pairs):
        return url  # nothing to hide: the URL exactly as given
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    query = urlencode([(k, MASK if _SECRET_PARAMS.match(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def register_url(url: str | None) -> str | None:
    """Register the URL's credentials (see :func:`register`) and return the redacted URL."""
    for secret in url_secrets(url or ""):
        register(secret)
    return redact_url(url)
