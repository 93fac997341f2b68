"""What the user typed, read from forms and query strings into typed values.

Never trusted: a field that is missing or not text reads as "", numbers that are not numbers
as None or the first page, and a `next` address off this server as "/". The services check
the values themselves; this module only reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import FormData

from regward.errors import RegwardError
from regward.server.dashboard import views
from regward.server.dashboard.views import capitalized
from regward.server.services import names, registry_access

PAGE_SIZE = 25


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def selector(value: object) -> list[str] | None:
    """The repositories half of an entry's key from a hidden field or query parameter: None
    when absent (the address alone names the entry), [] for the entry without repositories."""
    return registry_access.parse_repositories(value if isinstance(value, str) else None)


MAX_WHOLE = 2**31 - 1
"""The largest id, version or index a form may name: the database's integer columns' limit (a
larger one made PostgreSQL answer "integer out of range", shown as a 503)."""


def whole_number(value: str) -> int | None:
    """`value` as a whole number from 0 to MAX_WHOLE written in ASCII digits, else None:
    `str.isdigit` alone takes `²` and `٣`, which `int` refuses or reads otherwise."""
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        return None
    number = int(value)
    return number if number <= MAX_WHOLE else None


def version(form: FormData) -> int | None:
    return whole_number(text(form, "version"))


def confirmed(form: FormData) -> bool:
    """Whether an action that takes effect at once was confirmed: by the page's script after
    its dialog, or on the confirmation page the server shows without JavaScript."""
    return text(form, "confirmed") == "yes"


def safe_next(target: str) -> str:
    """Only a path on this server: never `//other.host` or `https://...`."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def page_number(value: str) -> int:
    """The page asked for; the first page for anything that is not one."""
    number = whole_number(value.strip())
    return number if number is not None and 0 < number <= names.MAX_PAGE else 1


MAX_SEARCH = 200


def entry_view(sort: str, search: str) -> tuple[str, str]:
    """How the Registry Access list is shown: its sort (one of views.ENTRY_SORTS; anything
    else is the default, by address) and its search text (trimmed, its first MAX_SEARCH
    characters)."""
    return (sort if sort in views.ENTRY_SORTS else "address", search.strip()[:MAX_SEARCH])


def parse_time(value: str, name: str) -> datetime | None:
    """A filter's date and time; None when left empty. The page's date-time fields have no
    zone; the page says they are UTC."""
    return names.check_time(value, name, naive_is_utc=True) if value else None


@dataclass
class EntryForm:
    """The fields of the Add registry and Edit forms, as the user typed them."""

    address: str = ""
    nickname: str = ""
    allowed: bool = True
    repositories: str = ""
    actions: tuple[str, ...] = ("pull", "push")
    extra_hosts: str = ""

    @property
    def advanced_open(self) -> bool:
        return bool(
            self.repositories.strip()
            or self.extra_hosts.strip()
            or set(self.actions) != {"pull", "push"}
        )

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> EntryForm:
        return cls(
            address=str(entry.get("address", "")),
            nickname=str(entry.get("nickname") or ""),
            allowed=bool(entry.get("allowed", True)),
            repositories="\n".join(entry.get("repositories") or ()),
            actions=tuple(entry.get("actions") or ("pull", "push")),
            extra_hosts="\n".join(entry.get("extra_hosts") or ()),
        )

    @classmethod
    def kept(cls, values: Mapping[str, Any]) -> EntryForm:
        """The form as `dataclasses.asdict` kept it for a refusal's page (rendering.KeptForm);
        a field of another type is left empty."""
        kept: dict[str, Any] = {}
        for name in ENTRY_FIELDS:
            value = values.get(name)
            if name == "actions" and isinstance(value, list):
                kept[name] = tuple(str(action) for action in value)
            elif isinstance(value, bool if name == "allowed" else str):
                kept[name] = value
        return cls(**kept)

    @classmethod
    def from_form(cls, form: FormData) -> EntryForm:
        actions: Sequence[str] = [a for a in form.getlist("actions") if isinstance(a, str)]
        return cls(
            address=text(form, "address").strip(),
            nickname=text(form, "nickname").strip(),
            allowed=form.get("allowed") == "true",
            repositories=text(form, "repositories"),
            actions=tuple(actions),
            extra_hosts=text(form, "extra_hosts"),
        )

    def to_entry(self) -> dict[str, Any]:
        """The entry in the policy file's form, for the services to parse and check."""
        entry: dict[str, Any] = {
            "address": self.address,
            "nickname": self.nickname,
            "allowed": self.allowed,
            "actions": list(self.actions),
        }
        repositories = _lines(self.repositories)
        if repositories:
            entry["repositories"] = repositories
        extra_hosts = _lines(self.extra_hosts)
        if extra_hosts:
            entry["extra_hosts"] = extra_hosts
        return entry


def _lines(value: str) -> list[str]:
    """One item per line (commas also separate), blanks dropped."""
    return [item.strip() for line in value.splitlines() for item in line.split(",") if item.strip()]


ENTRY_FIELDS = ("address", "nickname", "allowed", "repositories", "actions", "extra_hosts")


def field_errors(error: RegwardError) -> dict[str, str]:
    """The services' error beside the entry form's field it is about (the address when it is
    about the entry as a whole, e.g. one already listed)."""
    name = (error.field or "").rsplit(".", 1)[-1]
    return {name if name in ENTRY_FIELDS else "address": capitalized(error.message)}
