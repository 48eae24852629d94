"""Webhooks settings: the ``webhooks`` section of ``langgraph.json``, checked once.

:class:`WebhookPolicy` is built by ``RunService`` in ``build_core``, so a malformed section is
a :class:`ConfigError` before the server serves. It answers two questions:

* at run creation (:meth:`WebhookPolicy.check`): may a run name this URL? Scheme, host,
  length, ``require_https``, the ``allowed_domains`` and ``allowed_ports`` allow-lists, and
  hosts that are blocked as written (``localhost``, loopback, private, link-local, reserved
  and multicast IP literals, IPv6 and IPv4-mapped included) are a 422 naming the reason;
* at delivery (:meth:`WebhookPolicy.resolve`): which address may the POST connect to? The
  host is resolved and refused if *any* address is blocked, so a DNS name pointing into
  private space is caught, and the delivery connects to the address that was checked.

``webhooks.url`` keys, as on the official server: ``disable_loopback`` (default true),
``disable_private_ips`` (default true: private addresses are refused unless allowed),
``require_https`` (false), ``allowed_domains`` (``hooks.example.com`` or ``*.example.com``,
which matches subdomains only), ``allowed_ports`` and ``max_url_length`` (2048). The rest of
the section shapes deliveries (:class:`DeliverySettings`). Address classes come from the
stdlib :mod:`ipaddress`, never from hand-written ranges. URLs are parsed with ``httpx.URL``,
the parser of the client that delivers, so the host checked is the host connected to.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio

from triograph.core.infra.errors import ConfigError, InvalidRequest
from triograph.core.infra.models import Run

if TYPE_CHECKING:
    from triograph.core.infra.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_ENV_PREFIX = "LG_WEBHOOK_"
DEFAULT_MAX_URL_LENGTH = 2048
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_BASE_SECONDS = 1.0
DEFAULT_TIMEOUT_SECONDS = 10.0
#: keys of the payload besides the run's own wire fields (contract §5.11)
PAYLOAD_EXTRAS = ("run_started_at", "run_ended_at", "webhook_sent_at", "values", "error")
URL_KEYS = (
    "disable_loopback",
    "disable_private_ips",
    "require_https",
    "allowed_domains",
    "allowed_ports",
    "max_url_length",
)
SECTION_KEYS = (
    "url",
    "headers",
    "env_prefix",
    "allowed_fields",
    "max_attempts",
    "retry_base_seconds",
    "timeout_seconds",
)
#: headers the server sets itself: a static header may not replace them
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
_TEMPLATE = re.compile(r"\$\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
#: a host name as sent (after IDNA): letters, digits, ``-``, ``_`` and dots
_HOSTNAME = re.compile(r"[a-z0-9_.-]+")


@attrs.frozen(kw_only=True)
class DeliverySettings:
    """How deliveries are made: static headers, the payload allow-list, retries."""

    #: header templates already resolved from the environment
    headers: dict[str, str] = attrs.field(factory=dict)
    #: payload keys sent (None: all of them)
    allowed_fields: frozenset[str] | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: the first retry waits about this long; each further one twice as long (with jitter)
    retry_base_seconds: float = DEFAULT_RETRY_BASE_SECONDS
    #: seconds one attempt (connect, send, answer) may take
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    #: ``http.disable_webhooks``: runs keep their webhook, nothing is sent
    disabled: bool = False


class WebhookPolicy:
    """Which webhook URLs runs may name, and which addresses deliveries may reach."""

    def __init__(self, settings: Settings) -> None:
        section = _object(settings.webhooks, "webhooks", SECTION_KEYS)
        url = _object(section.get("url") or {}, "webhooks.url", URL_KEYS)
        self.disable_loopback = _flag(url, "disable_loopback", True)
        self.disable_private_ips = _flag(url, "disable_private_ips", True)
        self.require_https = _flag(url, "require_https", False)
        self.allowed_domains = tuple(
            _domain(d) for d in _strings(url, "allowed_domains", "webhooks.url")
        )
        self.allowed_ports = frozenset(
            _port(p) for p in _list(url, "allowed_ports", "webhooks.url")
        )
        self.max_url_length = _number(
            url, "webhooks.url.max_url_length", DEFAULT_MAX_URL_LENGTH, integer=True
        )
        disabled = settings.http.get("disable_webhooks", False)
        if not isinstance(disabled, bool):
            raise ConfigError(f"http.disable_webhooks must be true or false, got {disabled!r}")
        self.delivery = DeliverySettings(
            headers=_headers(section),
            allowed_fields=_allowed_fields(section),
            max_attempts=_number(
                section, "webhooks.max_attempts", DEFAULT_MAX_ATTEMPTS, integer=True
            ),
            retry_base_seconds=_number(
                section, "webhooks.retry_base_seconds", DEFAULT_RETRY_BASE_SECONDS, zero=True
            ),
            timeout_seconds=_number(section, "webhooks.timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
            disabled=disabled,
        )

    # -- at run creation ----------------------------------------------------------------------

    def check(self, url: str) -> None:
        """At run creation: a 422 naming the problem if ``url`` may not be used."""
        self._checked(url)

    def _checked(self, url: str) -> tuple[httpx.URL, int]:
        """The parsed URL and its port, once every check that needs no DNS passed."""
        if len(url) > self.max_url_length:
            raise InvalidRequest(
                f"Webhook URL too long: {len(url)} characters (at most {self.max_url_length})"
            )
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InvalidRequest(f"Invalid webhook URL: {exc}") from None
        host = parsed.host
        sent = parsed.raw_host.decode("ascii").lower()  # what goes on the wire (IDNA-encoded)
        if not host or (_literal_ip(host) is None and not _HOSTNAME.fullmatch(sent)):
            raise InvalidRequest(f"Invalid webhook hostname '{host}'")
        if parsed.scheme not in ("http", "https"):
            raise InvalidRequest(f"Invalid webhook scheme '{parsed.scheme}': use http or https")
        if self.require_https and parsed.scheme != "https":
            raise InvalidRequest("Webhook must use https")
        port = parsed.port if parsed.port is not None else 443 if parsed.scheme == "https" else 80
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"Invalid webhook port {port}")
        if self.allowed_ports and port not in self.allowed_ports:
            raise InvalidRequest(
                f"Webhook port {port} is not allowed (allowed: {sorted(self.allowed_ports)})"
            )
        if self.allowed_domains and not any(_matches(sent, d) for d in self.allowed_domains):
            raise InvalidRequest(
                f"Webhook host '{host}' is not in the allowed domains {list(self.allowed_domains)}"
            )
        reason = self._host_problem(host)
        if reason is not None:
            raise InvalidRequest(f"Webhook host blocked: {reason}")
        return parsed, port

    def _host_problem(self, host: str) -> str | None:
        """Why ``host`` is blocked as written (a name or an IP literal), or None."""
        name = host.lower().rstrip(".")
        if self.disable_loopback and (name == "localhost" or name.endswith(".localhost")):
            return f"'{host}' is a loopback name (webhooks.url.disable_loopback)"
        ip = _literal_ip(host)
        return None if ip is None else self._address_problem(host, ip)

    def _address_problem(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to ``ip`` is refused, naming the setting that allows it, or None."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        shown = host if host == str(ip) else f"{host} ({ip})"
        if ip.is_loopback or ip.is_unspecified:  # 0.0.0.0 and :: reach this machine too
            kind = "a loopback" if ip.is_loopback else "an unspecified (this machine's)"
            if self.disable_loopback:
                return f"{shown} is {kind} address (webhooks.url.disable_loopback)"
            return None
        if ip.is_multicast or ip.is_reserved:
            return f"{shown} is a reserved or multicast address"
        if not self.disable_private_ips:
            return None
        if ip.is_link_local:
            return f"{shown} is a link-local address (webhooks.url.disable_private_ips)"
        if ip.is_private or not ip.is_global:
            return f"{shown} is a private address (webhooks.url.disable_private_ips)"
        return None

    # -- at delivery --------------------------------------------------------------------------

    async def resolve(self, url: str) -> tuple[httpx.URL, str]:
        """At delivery: ``url`` checked again and its host resolved; every address it has
        must be allowed. Returns the parsed URL and the address to connect to, so a name
        that changes its answer between this check and the connection (DNS rebinding)
        cannot slip through.

        Raises:
            InvalidRequest: the URL or one of the host's addresses is blocked.
            OSError: the host could not be resolved (``socket.gaierror``).
        """
        parsed, port = self._checked(url)
        host = parsed.raw_host.decode("ascii")
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        for address in addresses:
            reason = self._address_problem(parsed.host, ipaddress.ip_address(address))
            if reason is not None:
                raise InvalidRequest(f"Webhook host blocked: {reason}")
        return parsed, addresses[0]


# -- hosts ------------------------------------------------------------------------------------


def _literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` spells, including the legacy IPv4 forms resolvers accept
    (``127.1``, ``0x7f000001``, ``2130706433``), or None for a name."""
    try:
        return ipaddress.ip_address(host.replace("%25", "%"))  # a zone id arrives encoded
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fA-FxX.]+", host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _matches(host: str, domain: str) -> bool:
    """``*.example.com`` matches subdomains only; anything else matches exactly."""
    host = host.lower().rstrip(".")
    if domain.startswith("*."):
        return host.endswith(domain[1:])
    return host == domain


# -- reading the section ----------------------------------------------------------------------


def _object(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {list(keys)}")
    return value


def _flag(section: dict[str, Any], name: str, default: bool) -> bool:
    value = section.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"webhooks.url.{name} must be true or false, got {value!r}")
    return value


def _number(
    section: dict[str, Any], key: str, default: float, *, integer: bool = False, zero: bool = False
) -> Any:
    """``section[<last part of key>]``: a number greater than 0 (or 0 too, with ``zero``), an
    int if asked; ``key`` is the dotted name errors show."""
    value: Any = section.get(key.rpartition(".")[2], default)
    number = (int,) if integer else (int, float)
    is_number = isinstance(value, number) and not isinstance(value, bool)
    if not is_number or value < 0 or (value == 0 and not zero):
        what = "an integer" if integer else "a number"
        raise ConfigError(
            f"{key} must be {what} {'at least 0' if zero else 'greater than 0'}, got {value!r}"
        )
    return value


def _list(section: dict[str, Any], name: str, where: str) -> list[Any]:
    value = section.get(name) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{name} must be a list, got {value!r}")
    return value


def _strings(section: dict[str, Any], name: str, where: str) -> list[str]:
    value = _list(section, name, where)
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}.{name} must be a list of non-empty strings, got {value!r}")
    return value


def _domain(value: str) -> str:
    domain = value.lower().rstrip(".")
    if "*" in domain.removeprefix("*.") or not _HOSTNAME.fullmatch(domain.removeprefix("*.")):
        raise ConfigError(
            f"webhooks.url.allowed_domains: {value!r} is not a host name or '*.domain'"
        )
    return domain


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"webhooks.url.allowed_ports: {value!r} is not a port (1..65535)")
    return value


def _headers(section: dict[str, Any]) -> dict[str, str]:
    """Static headers with their ``${{ env.VAR }}`` templates resolved now, from the
    environment; ``VAR`` must start with ``env_prefix`` so a config cannot leak any
    variable of the process."""
    prefix = section.get("env_prefix", DEFAULT_ENV_PREFIX)
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"webhooks.env_prefix must be a non-empty string, got {prefix!r}")
    headers = section.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError("webhooks.headers must be an object of header name -> value")
    out = {}
    for name, value in headers.items():
        if not isinstance(value, str):
            raise ConfigError(f"webhooks.headers.{name} must be a string, got {value!r}")
        if name.lower() in RESERVED_HEADERS:
            raise ConfigError(f"webhooks.headers.{name}: the server sets this header itself")
        if "${{" in _TEMPLATE.sub("", value):
            raise ConfigError(
                f"webhooks.headers.{name}: malformed template in {value!r}; "
                "write '${{ env.VAR }}'"
            )
        out[name] = _TEMPLATE.sub(functools.partial(_env_value, name, prefix), value)
    return out


def _env_value(header: str, prefix: str, match: re.Match[str]) -> str:
    var = match[1]
    if not var.startswith(prefix):
        raise ConfigError(
            f"webhooks.headers.{header}: environment variable {var!r} does not start with "
            f"the env_prefix {prefix!r}"
        )
    if var not in os.environ:
        raise ConfigError(f"webhooks.headers.{header}: environment variable {var!r} is not set")
    return os.environ[var]


def _allowed_fields(section: dict[str, Any]) -> frozenset[str] | None:
    if "allowed_fields" not in section:
        return None
    fields = _strings(section, "allowed_fields", "webhooks")
    known = (*attrs.fields_dict(Run), *PAYLOAD_EXTRAS)
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise ConfigError(
            f"webhooks.allowed_fields: unknown payload fields {unknown}; allowed: {list(known)}"
        )
    return frozenset(fields)
