"""Which repositories an import may clone, decided before git runs.

A workspace token must not make the server a reader of its own files or a probe of its
network. A repository URL is refused unless:

- its scheme is one ``ORCH_IMPORT_PROTOCOLS`` names (``https`` alone by default), and it is
  not git's ``<transport>::<address>`` form;
- a local path (plain or ``file://``) resolves, symlinks followed, inside a directory
  ``ORCH_IMPORT_LOCAL_ROOTS`` names (none by default); git is given the resolved path;
- every address its host resolves to is public (not loopback, private, link-local,
  site-local, unspecified, multicast or reserved, nor an IPv6 address carrying an IPv4 one
  that is not: mapped, 6to4 or Teredo), or inside a network ``ORCH_IMPORT_ALLOW_NETWORKS``
  names.

Over http(s), git connects to the very addresses checked: they are pinned with
``http.curloptResolve``, and redirects are not followed, so neither a DNS answer that changes
between the check and the connect (rebinding) nor a redirect leads git elsewhere. What
remains: ssh and ``git://`` resolve the host again in their own clients, so they stay open
to rebinding (neither is allowed by default); a proxy set in the server's environment
resolves names itself; a repository under an allowed root can still point git at objects
elsewhere (``objects/info/alternates``, a ``.git`` file), which only someone who can write
under that root can arrange.
"""

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio

from orchestrator.errors import ValidationFailed
from orchestrator.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HELPER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")  # git's <transport>::<address>
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Strict on purpose: a host that Python and curl could read differently is refused, so the
# host checked is the host git connects to.
NETLOC = re.compile(
    r"^(?:[^@/?#\\\s]*@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)(?::(\d{1,5}))?$"
)
HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
RESOLVE_TIMEOUT_S = 10.0

NOT_REACHABLE = (
    "repoUrl's host does not resolve to a public address: imports reach public hosts only "
    "(an operator can allow other networks with ORCH_IMPORT_ALLOW_NETWORKS)"
)


class RepoRefused(ValidationFailed):
    """A repository URL the server will not clone; the message says what to change."""


@dataclass(frozen=True)
class Location:
    """A repository URL taken apart. ``shown`` is what is recorded: scheme, host, port and
    path, never a user, password, query or fragment."""

    url: str  # as given: what git is handed (credentials and all)
    scheme: str  # "file" for a local path, "ssh" for git's user@host:path form
    shown: str
    host: str = ""
    port: int = 0
    path: str = ""  # a local path, as given


@dataclass(frozen=True)
class Target:
    """A repository git may clone: the URL to give it, what to record, and the ``-c`` options
    and protocols that hold git to what was checked."""

    url: str
    shown: str
    protocols: str
    config: tuple[str, ...] = ()


def _refused(message: str, code: str) -> RepoRefused:
    return RepoRefused(message, {"path": "$.repoUrl"}, code=code)


def parse(url: str) -> Location:
    """Classify ``url`` as git would: a URL, a local path, or ``[user@]host:path``."""
    if HELPER.match(url):
        raise _refused(
            "repoUrl may not use git's <transport>::<address> form: give an https:// URL",
            "REPO_URL_INVALID",
        )
    if "\\" in url or any(c.isspace() for c in url):
        raise _refused("repoUrl may not hold spaces or backslashes", "REPO_URL_INVALID")
    if match := SCHEME.match(url):
        return _parse_url(url, match[1].lower())
    colon, slash = url.find(":"), url.find("/")
    if colon < 0 or 0 <= slash < colon:  # git's own test for a local path
        return Location(url, "file", shown=url, path=url)
    return _parse_scp(url)


def _parse_url(url: str, scheme: str) -> Location:
    parts = urlsplit(url)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _refused("a file:// URL names no host: file:///path", "REPO_URL_INVALID")
        path = unquote(parts.path)
        return Location(url, "file", shown=f"file://{parts.path}", path=path)
    netloc = NETLOC.match(parts.netloc)
    if netloc is None or (netloc[2] is not None and not 0 < int(netloc[2]) < 65536):
        raise _refused(
            "repoUrl's host is not a host name or address (and optional port) git can use",
            "REPO_URL_INVALID",
        )
    host = netloc[1].strip("[]").lower()
    port = int(netloc[2]) if netloc[2] else DEFAULT_PORTS.get(scheme, 0)
    shown_port = f":{netloc[2]}" if netloc[2] else ""
    return Location(
        url,
        scheme,
        shown=f"{scheme}://{netloc[1].lower()}{shown_port}{parts.path}",
        host=host,
        port=port,
    )


def _parse_scp(url: str) -> Location:
    """``[user@]host:path`` is ssh; ``[user@][host]:path`` brackets a host with a colon."""
    if url.startswith("[") or "@[" in url:
        head, bracketed, path = url.partition("]:")
        host = head.rpartition("@")[2].removeprefix("[")
    else:
        head, bracketed, path = url.partition(":")
        host = head.rpartition("@")[2]
    port = 22
    if not _is_ip(host) and ":" in host:
        host, _, given_port = host.rpartition(":")
        port = int(given_port) if given_port.isdigit() else -1
    if not bracketed or (not HOST.match(host) and not _is_ip(host)) or not 0 < port < 65536:
        raise _refused(
            "repoUrl's host is not a host name or address git can use", "REPO_URL_INVALID"
        )
    shown = f"[{host.lower()}]" if ":" in host else host.lower()
    return Location(url, "ssh", shown=f"{shown}:{path}", host=host.lower(), port=port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def public(address: IPAddress) -> bool:
    """Routable on the internet: none of the ranges a server's own network lives in.

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo) is judged by the IPv4
    ones too: 2002:7f00:1:: is 127.0.0.1 to a host with a 6to4 relay, though the range is
    global. Site-local (fec0::/10) is deprecated but still routed inside some networks.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:
            return False
        carried = [address.sixtofour, *(address.teredo or ())]
        if not all(public(ipv4) for ipv4 in carried if ipv4 is not None):
            return False
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    return address.is_global and not (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
    )


class RepoAccess:
    """The operator's rules for repository URLs, read once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.schemes = {s for s in settings.import_protocols.split(":") if s and s != "file"}
        self.roots = [Path(r) for r in settings.import_local_roots.split(os.pathsep) if r]
        self.networks: list[IPNetwork] = [
            ipaddress.ip_network(n.strip(), strict=False)
            for n in settings.import_allow_networks.split(",")
            if n.strip()
        ]

    async def check(self, location: Location) -> Target:
        """The target git may clone, or ``RepoRefused`` saying what to change."""
        if location.scheme == "file":
            return await self._check_local(location)
        if location.scheme not in self.schemes:
            allowed = ", ".join(f"{s}://" for s in sorted(self.schemes)) or "none"
            raise _refused(
                f"repoUrl's scheme {location.scheme} is not allowed on this server "
                f"(allowed: {allowed}; ORCH_IMPORT_PROTOCOLS sets them)",
                "REPO_SCHEME_REFUSED",
            )
        addresses = await self._resolve(location.host, location.port)
        if not addresses or not all(self._allowed(a) for a in addresses):
            raise _refused(NOT_REACHABLE, "REPO_HOST_REFUSED")
        config: tuple[str, ...] = ()
        if location.scheme in ("http", "https"):
            pinned = ",".join(f"[{a}]" if a.version == 6 else str(a) for a in addresses)
            config = (
                f"http.curloptResolve={location.host}:{location.port}:{pinned}",
                "http.followRedirects=false",
            )
        return Target(
            url=location.url,
            shown=location.shown,
            protocols=":".join(sorted(self.schemes)),
            config=config,
        )

    def _allowed(self, address: IPAddress) -> bool:
        return public(address) or any(address in n for n in self.networks)

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address the host resolves to (an address resolves to itself); none if the
        name does not resolve: said the same way as a private one, so that the answer does
        not tell which internal names exist."""
        try:
            with anyio.fail_after(RESOLVE_TIMEOUT_S):
                found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, TimeoutError):
            return []
        addresses: list[IPAddress] = []
        for *_, sockaddr in found:
            address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
        return addresses

    async def _check_local(self, location: Location) -> Target:
        if not self.roots:
            raise _refused(
                "local repositories are not allowed on this server: give an https:// URL "
                "(an operator can allow directories with ORCH_IMPORT_LOCAL_ROOTS)",
                "REPO_PATH_REFUSED",
            )
        real = await anyio.to_thread.run_sync(_inside, location.path, self.roots)
        if real is None:
            raise _refused(
                "repoUrl is not under a directory this server imports local repositories "
                "from (ORCH_IMPORT_LOCAL_ROOTS)",
                "REPO_PATH_REFUSED",
            )
        return Target(url=real, shown=location.shown, protocols="file")


def _inside(path: str, roots: list[Path]) -> str | None:
    """The real path (symlinks resolved) if it is inside one of the roots, else None."""
    real = Path(os.path.realpath(path))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return str(real)
    return None
