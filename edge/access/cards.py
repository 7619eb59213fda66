"""Card identities as the store and the policy key them.

`H10301:12:3456`, `H10306:…`, `C1000:<company>:<number>`, `H10304:…` and
`raw:<hex>` are both the CLI's `--card` syntax and the lookup keys, so a card
typed by an operator and a card read by a reader meet in the same dictionary.
"""

from __future__ import annotations

import hashlib
import hmac

from edge.site.syncdoc import CARD_FIELD_BITS

FORMATS = (*CARD_FIELD_BITS, "raw")


class CardSpecError(ValueError):
    pass


def card_key(fmt: str, facility: int, number: int) -> str:
    return f"{fmt}:{facility}:{number}"


def raw_key(hex_value: str) -> str:
    return f"raw:{hex_value.lower()}"


def parse_card_spec(text: str) -> str:
    """`FORMAT:FIELDS` to a lookup key, with a precise error for anything else."""
    fmt, _, rest = text.partition(":")
    if fmt.lower() == "raw":
        value = rest.strip()
        if not value or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise CardSpecError(f"{text!r}: raw cards are raw:<hex digits>")
        return raw_key(value)
    if fmt not in CARD_FIELD_BITS:
        raise CardSpecError(
            f"{text!r}: unknown card format {fmt!r} (expected one of: {', '.join(FORMATS)})"
        )
    fields = rest.split(":")
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        raise CardSpecError(f"{text!r}: expected {fmt}:<facility>:<number>")
    facility, number = int(fields[0]), int(fields[1])
    fc_bits, num_bits = CARD_FIELD_BITS[fmt]
    if facility >= 1 << fc_bits:
        raise CardSpecError(f"{text!r}: facility code {facility} does not fit {fc_bits} bits")
    if number >= 1 << num_bits:
        raise CardSpecError(f"{text!r}: card number {number} does not fit {num_bits} bits")
    return card_key(fmt, facility, number)


def pin_hmac(pin_key: bytes, digits: str) -> str:
    """HMAC-SHA256 keyed with the site PIN key over the PIN's ASCII digits."""
    if not digits.isdigit() or not digits.isascii():
        raise CardSpecError("a PIN is made of the digits 0-9 only")
    return hmac.new(pin_key, digits.encode("ascii"), hashlib.sha256).hexdigest()
