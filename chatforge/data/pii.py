"""PII: email addresses and public IP addresses replaced by placeholders, as FineWeb does.

Emails become `email@example.com` / `firstname.lastname@example.org` (reserved example domains),
public IPv4 addresses one of a few placeholder addresses. Private, loopback and reserved
addresses (10.x, 192.168.x, 127.x, ...) and version-number-like strings that are not valid
addresses are left alone. Counts go to the step's counters (`emails`, `ips`, `docs_changed`).
"""

from __future__ import annotations

import ipaddress
import re

from chatforge.data.steps import Doc, Step

EMAIL_RE = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)")
IPV4_RE = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|[01]?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|[01]?\d?\d)(?![\d.]*\d)")
EMAIL_PLACEHOLDERS = ("email@example.com", "firstname.lastname@example.org")
IP_PLACEHOLDERS = ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168")


def is_public_ip(s: str) -> bool:
    try:
        return ipaddress.ip_address(s).is_global
    except ValueError:
        return False


class PIIRedactor(Step):
    name = "pii"

    def __init__(self, emails: bool = True, ips: bool = True):
        super().__init__()
        self.emails, self.ips = emails, ips
        self._i = 0

    def _email(self, m):
        self.stats.counters["emails"] += 1
        self._i += 1
        return EMAIL_PLACEHOLDERS[self._i % len(EMAIL_PLACEHOLDERS)]

    def _ip(self, m):
        s = m.group(0)
        if not is_public_ip(s) or s in IP_PLACEHOLDERS:
            return s
        self.stats.counters["ips"] += 1
        self._i += 1
        return IP_PLACEHOLDERS[self._i % len(IP_PLACEHOLDERS)]

    def process(self, doc: Doc):
        text = doc.text
        if self.emails and "@" in text:
            text = EMAIL_RE.sub(self._email, text)
        if self.ips and "." in text:
            text = IPV4_RE.sub(self._ip, text)
        if text != doc.text:
            self.stats.counters["docs_changed"] += 1
            doc.text = text
        return doc
