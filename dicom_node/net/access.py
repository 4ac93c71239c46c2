"""Who may associate: calling AE titles, and for each AE title the hosts it may call from.

Decided when the A-ASSOCIATE-RQ arrives, before any presentation context is
negotiated; a refusal is answered with A-ASSOCIATE-RJ (rejected-permanent, service-user,
calling-AE-title-not-recognised, PS3.8 9.3.4) and logged with its reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


@dataclass(frozen=True)
class AccessPolicy:
    """``allowed_aets`` empty: any AE title, or none when ``open_when_empty`` is False (the
    Query/Retrieve policy: patient data goes to nobody unless listed); an AE title with
    hosts listed may call only from those addresses or networks. ``key`` names the
    configuration key in refusals."""

    allowed_aets: frozenset[str] = frozenset()
    hosts: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)
    open_when_empty: bool = True
    key: str = "allowed_calling_aets"

    @classmethod
    def from_config(
        cls,
        allowed_aets: Sequence[str],
        hosts: Mapping[str, Sequence[str]],
        *,
        open_when_empty: bool = True,
        key: str = "allowed_calling_aets",
    ) -> AccessPolicy:
        return cls(
            frozenset(a.strip() for a in allowed_aets),
            {ae.strip(): _networks(nets) for ae, nets in hosts.items()},
            open_when_empty,
            key,
        )

    @property
    def admits_any_ae(self) -> bool:
        """True when any calling AE title is let in (from any address not bound)."""
        return not self.allowed_aets and self.open_when_empty

    def refusal(self, calling_ae: str, address: str) -> str | None:
        """Why an association (or request) from ``calling_ae`` at ``address`` is refused,
        or None."""
        ae = calling_ae.strip()
        if (self.allowed_aets or not self.open_when_empty) and ae not in self.allowed_aets:
            return f"calling AE title {ae!r} is not in {self.key}"
        networks = self.hosts.get(ae)
        if networks is None:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return f"address {address!r} of {ae!r} is not an IP address"
        if not any(ip in net for net in networks):
            return f"{ae!r} may not call from {address}"
        return None
