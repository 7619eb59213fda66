"""Generated `edge-sync/1` sites: a small example site with one holder per rule,
and large sites (100,000 members, 1,000,000 credentials) for benchmarks.

The example site is laid out around a reference day (a Monday), so scripted
decisions at fixed local times of that day always mean the same thing.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sys
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

SITE_ID = "mitte"
TIMEZONE = "Europe/Berlin"
# A fixed PIN key for generated sites; a real site's key is provisioned at enrolment.
EXAMPLE_PIN_KEY = bytes.fromhex("5e" * 32)


def pin_hmac(key: bytes, digits: str) -> str:
    return hmac.new(key, digits.encode("ascii"), hashlib.sha256).hexdigest()


def reference_monday(today: date) -> date:
    """The Monday of this week: every example rule is laid out around it."""
    return today - timedelta(days=today.weekday())


def _instant(day: date, hhmm: str, tz: ZoneInfo) -> str:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, time(h, m), tzinfo=tz).isoformat()


@dataclass(frozen=True)
class CastMember:
    """Who is who in the example site, for scripts and tests."""

    id: str
    card: str | None
    pin: str | None
    story: str


def example_site(
    day: date, pin_key: bytes = EXAMPLE_PIN_KEY
) -> tuple[dict[str, Any], list[CastMember]]:
    tz = ZoneInfo(TIMEZONE)
    d = day.isoformat()

    def days(n: int) -> str:
        return (day + timedelta(days=n)).isoformat()

    def at(n: int, hhmm: str) -> str:
        return _instant(day + timedelta(days=n), hhmm, tz)

    cast: list[CastMember] = []
    members: list[dict[str, Any]] = []

    def member(
        mid: str,
        name: str,
        story: str,
        *,
        card: tuple[str, ...] | None = None,
        pin: str | None = None,
        card_status: str = "active",
        **fields: Any,
    ) -> None:
        creds: list[dict[str, Any]] = []
        spec = None
        if card is not None:
            fmt, *rest = card
            if fmt == "raw":
                creds.append(
                    {
                        "id": f"{mid}-card",
                        "type": "card",
                        "format": "raw",
                        "value": rest[0],
                        "status": card_status,
                    }
                )
                spec = f"raw:{rest[0]}"
            else:
                creds.append(
                    {
                        "id": f"{mid}-card",
                        "type": "card",
                        "format": fmt,
                        "facility_code": int(rest[0]),
                        "card_number": int(rest[1]),
                        "status": card_status,
                    }
                )
                spec = f"{fmt}:{rest[0]}:{rest[1]}"
        if pin is not None:
            creds.append(
                {
                    "id": f"{mid}-pin",
                    "type": "pin",
                    "pin_hmac": pin_hmac(pin_key, pin),
                    "status": "active",
                }
            )
        doc = {
            "id": mid,
            "name": name,
            "kind": "member",
            "company": None,
            "company_manager": False,
            "plan": None,
            "contract": {"start": days(-300), "end": None},
            "billing": {"status": "ok", "grace_until": None},
            "access": [],
            "credentials": creds,
            "day_passes": [],
            "day_pass_balance": 0,
            "credits": 0,
        }
        doc.update(fields)
        members.append(doc)
        cast.append(CastMember(mid, spec, pin, story))

    member(
        "m-1001",
        "Ada Lovelace",
        "hot-desk member, past due but inside her grace period; ACME gives her office 12",
        card=("H10301", "12", "3456"),
        pin="1234",
        plan="hot-desk",
        company="acme",
        billing={"status": "past_due", "grace_until": at(4, "00:00")},
    )
    member(
        "m-1002",
        "Grace Brewster",
        "resident member, billing ok, any hour",
        card=("H10306", "1000", "50001"),
        pin="2468",
        plan="resident",
    )
    member(
        "m-1003",
        "Linus Suspended",
        "resident whose billing is suspended",
        card=("H10301", "12", "4000"),
        plan="resident",
        billing={"status": "suspended", "grace_until": None},
    )
    member(
        "m-1004",
        "Ken Ended",
        "hot-desk member whose contract ended yesterday",
        card=("H10301", "12", "4001"),
        plan="hot-desk",
        contract={"start": days(-300), "end": days(-1)},
    )
    member(
        "m-1005",
        "Dennis Soon",
        "hot-desk member whose contract starts next week",
        card=("H10301", "12", "4002"),
        plan="hot-desk",
        contract={"start": days(7), "end": None},
    )
    member(
        "m-1006",
        "Barbara Overdue",
        "resident past due with the grace period over",
        card=("C1000", "100", "70001"),
        plan="resident",
        billing={"status": "past_due", "grace_until": at(-2, "00:00")},
    )
    member(
        "m-1007",
        "Margaret Visitor",
        "nonmember with a day pass bought for today",
        card=("H10304", "500", "12345"),
        kind="nonmember",
        day_passes=[{"id": "dp-7", "valid_from": d, "valid_to": None}],
    )
    member(
        "m-1008",
        "Alan Pay-as-you-go",
        "nonmember with two day passes on balance, and a booking of the Ada room 10:00-11:00",
        card=("raw", "0A0B0C0D"),
        kind="nonmember",
        day_pass_balance=2,
    )
    member(
        "m-1009",
        "Frances Acme",
        "ACME employee without a plan: company access and company day passes",
        card=("H10301", "12", "4003"),
        company="acme",
    )
    member(
        "m-1010",
        "Edsger Lost",
        "resident whose card was disabled after it was lost",
        card=("H10301", "12", "4004"),
        card_status="disabled",
        plan="resident",
    )
    member(
        "m-1011",
        "Radia Ops",
        "resident on call, server room at any hour (card then PIN)",
        card=("H10301", "12", "4005"),
        pin="9753",
        plan="resident",
        access=[
            {
                "group": "server",
                "schedule": "always",
                "valid_from": None,
                "valid_to": at(30, "18:00"),
            }
        ],
    )
    member(
        "m-1012",
        "Bjarne Initech",
        "employee of Initech, whose company billing is suspended",
        card=("H10301", "12", "4006"),
        company="initech",
    )

    guest_pin = "1111"
    doc: dict[str, Any] = {
        "schema": "edge-sync/1",
        "cursor": "c-000001",
        "generated_at": at(0, "07:00"),
        "site": {
            "id": SITE_ID,
            "name": "Mitte",
            "timezone": TIMEZONE,
            "day_pass_access": [{"group": "members", "schedule": "staffed"}],
        },
        "schedules": [
            {"id": "always", "windows": [{"days": "mon-sun", "from": "00:00", "to": "24:00"}]},
            {
                "id": "staffed",
                "closed_on_holidays": True,
                "windows": [
                    {"days": "mon-fri", "from": "08:00", "to": "19:00"},
                    {"days": "sat", "from": "10:00", "to": "16:00"},
                ],
            },
            {"id": "lunch", "windows": [{"days": "mon-fri", "from": "12:00", "to": "13:00"}]},
            {"id": "night", "windows": [{"days": "mon-sun", "from": "22:00", "to": "06:00"}]},
        ],
        "holidays": [{"date": days(3), "name": "Founders' Day"}],
        "doors": [
            {
                "id": "front",
                "name": "Front entrance",
                "unlock_schedule": "lunch",
                "first_person_in": True,
                "mode": "card_or_pin",
            },
            {"id": "office-12", "name": "Office 12", "mode": "card_or_pin"},
            {"id": "server-room", "name": "Server room", "mode": "card_and_pin"},
            {"id": "room-ada", "name": "Ada room", "mode": "card"},
        ],
        "access_groups": [
            {"id": "members", "doors": ["front"]},
            {"id": "office-12", "doors": ["front", "office-12"]},
            {"id": "server", "doors": ["server-room"]},
        ],
        "plans": [
            {"id": "hot-desk", "access": [{"group": "members", "schedule": "staffed"}]},
            {"id": "resident", "access": [{"group": "members", "schedule": "always"}]},
        ],
        "companies": [
            {
                "id": "acme",
                "name": "ACME GmbH",
                "billing": {"status": "ok"},
                "access": [{"group": "office-12", "schedule": "always"}],
                "day_passes": 10,
                "credits": 40,
            },
            {
                "id": "initech",
                "name": "Initech",
                "billing": {"status": "suspended"},
                "access": [{"group": "office-12", "schedule": "always"}],
                "day_passes": 5,
                "credits": 0,
            },
        ],
        "members": members,
        "guests": [
            {
                "id": "g-9",
                "name": "Grace Hopper",
                "host": "m-1001",
                "valid_from": at(0, "09:00"),
                "valid_to": at(0, "18:00"),
                "access": [{"group": "members", "schedule": "staffed"}],
                "credentials": [
                    {
                        "id": "g-9-pin",
                        "type": "pin",
                        "pin_hmac": pin_hmac(pin_key, guest_pin),
                        "status": "active",
                    }
                ],
            }
        ],
        "rooms": [
            {
                "id": "ada",
                "name": "Ada room",
                "door": "room-ada",
                "capacity": 6,
                "no_show_release_min": 15,
                "checkin_early_min": 10,
                "credits_per_hour": 2,
            }
        ],
        "bookings": [
            {
                "id": "b-55",
                "room": "ada",
                "member": "m-1008",
                "attendees": ["m-1007"],
                "start": at(0, "10:00"),
                "end": at(0, "11:00"),
                "status": "confirmed",
                "invoiced": False,
                "recurrence_id": None,
            }
        ],
    }
    cast.append(CastMember("g-9", None, guest_pin, "guest of Ada, today 09:00-18:00"))
    return doc, cast


def write_large_site(
    out: IO[str],
    members: int,
    credentials_per_member: int = 2,
    seed: int = 1,
    pin_key: bytes = EXAMPLE_PIN_KEY,
    day: date | None = None,
) -> int:
    """Stream a large site to `out`; returns the number of credentials written.

    Every member has one H10306 card (unique by construction); further
    credentials alternate raw cards and PINs. Plans, companies, billing states
    and contract ends are spread like a busy real site.
    """
    rng = random.Random(seed)
    day = day or reference_monday(date.today())
    small, _ = example_site(day, pin_key)
    head = {k: v for k, v in small.items() if k not in ("members", "guests", "bookings")}
    head["companies"] = small["companies"] + [
        {
            "id": f"co-{i}",
            "name": f"Company {i}",
            "billing": {"status": "ok"},
            "access": [{"group": "office-12", "schedule": "always"}],
            "day_passes": 20,
            "credits": 100,
        }
        for i in range(200)
    ]
    text = json.dumps(head)
    out.write(text[:-1] + ', "members": [')
    count = 0
    for i in range(members):
        creds: list[dict[str, Any]] = [
            {
                "id": f"c{i}-0",
                "type": "card",
                "format": "H10306",
                "facility_code": i >> 16,
                "card_number": i & 0xFFFF,
                "status": "active",
            }
        ]
        for j in range(1, credentials_per_member):
            if j % 2:
                creds.append(
                    {
                        "id": f"c{i}-{j}",
                        "type": "card",
                        "format": "raw",
                        "value": f"{i:08x}{j:02x}",
                        "status": "active",
                    }
                )
            else:
                creds.append(
                    {
                        "id": f"c{i}-{j}",
                        "type": "pin",
                        "pin_hmac": pin_hmac(pin_key, f"{i:07d}{j}"),
                        "status": "active",
                    }
                )
        count += len(creds)
        roll = rng.random()
        billing = (
            {"status": "ok"}
            if roll < 0.9
            else {
                "status": "past_due",
                "grace_until": _instant(day + timedelta(days=3), "00:00", ZoneInfo(TIMEZONE)),
            }
            if roll < 0.97
            else {"status": "suspended"}
        )
        start = day - timedelta(days=rng.randrange(1, 900))
        end = start + timedelta(days=rng.randrange(30, 1200)) if rng.random() < 0.2 else None
        member: dict[str, Any] = {
            "id": f"m-{i}",
            "name": f"Member {i}",
            "kind": "member",
            "company": f"co-{rng.randrange(200)}" if rng.random() < 0.3 else None,
            "plan": "resident" if rng.random() < 0.4 else "hot-desk",
            "contract": {"start": start.isoformat(), "end": end and end.isoformat()},
            "billing": billing,
            "credentials": creds,
            "day_pass_balance": rng.randrange(3),
        }
        if i:
            out.write(",")
        out.write(json.dumps(member))
    out.write("]}")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwsim.sitegen", description=__doc__)
    parser.add_argument(
        "--members",
        type=int,
        default=0,
        help="write a large site with this many members (default: the example)",
    )
    parser.add_argument("--credentials-per-member", type=int, default=2)
    parser.add_argument("--out", type=Path, help="output file (default: stdout)")
    args = parser.parse_args(argv)
    out = args.out.open("w") if args.out else sys.stdout
    try:
        if args.members:
            write_large_site(out, args.members, args.credentials_per_member)
        else:
            doc, _ = example_site(reference_monday(date.today()))
            json.dump(doc, out, indent=1)
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
