"""DKIM signatures (RFC 6376, relaxed/relaxed, SHA-256) on the email the router composes.

RSA (PKCS#1 v1.5, 2048 bits or more) and Ed25519 (RFC 8463) keys, one or two selectors. The
signatures are made by OpenSSL through `cryptography`: a pure-Python RSA signature costs about
ten times as much, and the email channel signs every message it composes. The message arrives
with CRLF line ends; its body is canonicalised and hashed once for every signature, and only
the header fields that are signed are canonicalised.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from router.config import EmailConfig

Algorithm = Literal["rsa", "ed25519"]
MIN_RSA_BITS = 2048

# The header fields signed when present, in this order; From is always signed and listed
# once more than it occurs, so that a From added on the way breaks the signature.
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
_SIGNED = frozenset(name.encode() for name in SIGNED_HEADERS)

_WSP_RUN = re.compile(rb"[ \t]+")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")
# RFC 6376 selectors and RFC 1035 host names, ASCII (an IDN domain goes as its xn-- form).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOMAIN = re.compile(rf"(?=.{{1,253}}$)(?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?")
_LINE = 78  # folded lines of the signature field stay within RFC 5322's recommended length


class DkimConfigError(ValueError):
    """A DKIM key or name in [email] is unusable; the message names the key, on one line."""


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of WSP to one space, none at line ends, no empty lines at the end."""
    if b"\t" in body or b"  " in body or b" \r\n" in body or body.endswith(b" "):
        body = _WSP_RUN.sub(b" ", body).replace(b" \r\n", b"\r\n")
        if body.endswith(b" "):
            body = body[:-1]
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def relaxed_header(field: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, WSP runs to one space, none at ends."""
    name, _, value = field.partition(b":")
    if b"\n" in value or b"\t" in value or b"  " in value:
        value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b""))
    value = value.strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One selector and its private key."""

    selector: str
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if isinstance(self.key, rsa.RSAPrivateKey) else "ed25519-sha256"

    def sign_digest(self, digest: bytes) -> bytes:
        """The signature of the SHA-256 of the data to sign (RFC 8463 signs that digest)."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return self.key.sign(digest)


class DkimSigner:
    """Signs composed messages as `domain` with one or two keys (e.g. RSA and Ed25519)."""

    def __init__(
        self, domain: str, keys: Sequence[DkimKey], clock: Callable[[], float] = time.time
    ) -> None:
        if not keys:
            raise ValueError("a DKIM signer needs at least one key")
        self.domain = domain
        self.keys = tuple(keys)
        self._clock = clock
        # The folded field of each key and h= list, with stand-ins for t= and bh=: the same
        # for every message of a content, so it is folded and canonicalised once.
        self._templates: dict[tuple[int, tuple[str, ...], int], _Template] = {}

    @property
    def uses_rsa(self) -> bool:
        """An RSA signature takes about a millisecond of CPU, during which OpenSSL lets go of
        the interpreter: worth running beside the event loop, on another core."""
        return any(isinstance(k.key, rsa.RSAPrivateKey) for k in self.keys)

    def sign(self, message: bytes) -> bytes:
        """The DKIM-Signature field(s), folded and CRLF-terminated, to put before `message`
        (CRLF line ends). Raises ValueError for a message without a From field."""
        end = message.find(b"\r\n\r\n")
        if end < 0:
            header_block, body = message, b""
        else:
            header_block, body = message[: end + 2], message[end + 4 :]
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())

        # Each signed name's fields, canonicalised, top to bottom; signed bottom to top.
        found: dict[bytes, list[bytes]] = {}
        for field in _FIELD_END.split(header_block):
            colon = field.find(b":")
            if colon > 0 and (name := field[:colon].rstrip(b" \t").lower()) in _SIGNED:
                found.setdefault(name, []).append(relaxed_header(field))
        if b"from" not in found:
            raise ValueError("a message to sign needs a From header field")
        names: list[str] = []
        signed: list[bytes] = []
        for name in SIGNED_HEADERS:
            fields = found.get(name.encode(), [])
            names.extend([name] * len(fields))
            signed.extend(reversed(fields))
        names.append("from")  # over-signed: an empty instance, it adds nothing to the hash
        headers = b"".join(signed)

        timestamp = str(int(self._clock())).encode()
        out: list[bytes] = []
        for index, key in enumerate(self.keys):
            template = self._template(index, tuple(names), len(timestamp))
            unsigned = template.fill(template.folded, timestamp, body_hash)
            canonical = template.fill(template.canonical, timestamp, body_hash)
            digest = hashlib.sha256(headers + canonical).digest()
            signature = base64.b64encode(key.sign_digest(digest)).decode()
            out.append(unsigned + _fold_value(signature, template.last_line))
        return b"".join(out)

    def _template(self, index: int, names: tuple[str, ...], digits: int) -> _Template:
        found = self._templates.get((index, names, digits))
        if found is None:
            key = self.keys[index]
            tags = [
                "v=1",
                f"a={key.algorithm}",
                "c=relaxed/relaxed",
                f"d={self.domain}",
                f"s={key.selector}",
                "t=" + "#" * digits,
            ]
            folded = _fold(tags, list(names), "@" * _BODY_HASH_CHARS)
            found = _Template(
                folded,
                relaxed_header(folded)[:-2],
                len(folded) - folded.rfind(b"\n") - 1,
                b"t=" + b"#" * digits,
            )
            if len(self._templates) > 64:  # h= lists differ only by the optional fields
                self._templates.clear()
            self._templates[index, names, digits] = found
        return found


_BODY_HASH_CHARS = 44  # base64 of a SHA-256 digest
_BODY_HASH_STAND_IN = b"bh=" + b"@" * _BODY_HASH_CHARS


@dataclass(frozen=True, slots=True)
class _Template:
    folded: bytes  # the field up to "b=", folded, t= and bh= as stand-ins
    canonical: bytes  # the same, relaxed-canonicalised, without its CRLF
    last_line: int  # characters on the line that ends with "b="
    time_stand_in: bytes

    def fill(self, text: bytes, timestamp: bytes, body_hash: bytes) -> bytes:
        return text.replace(self.time_stand_in, b"t=" + timestamp, 1).replace(
            _BODY_HASH_STAND_IN, b"bh=" + body_hash, 1
        )


def _fold(tags: list[str], names: list[str], body_hash: str) -> bytes:
    """`DKIM-Signature: v=1; ...; h=...; bh=...; b=` folded at tag and name boundaries."""
    lines = ["DKIM-Signature:"]

    def put(piece: str, space: str) -> None:
        if len(lines[-1]) + len(space) + len(piece) > _LINE:
            lines.append(" " + piece)
        else:
            lines[-1] += space + piece

    for tag in tags:
        put(tag + ";", " ")
    put("h=" + names[0], " ")
    for name in names[1:]:
        put(":" + name, "")  # FWS is allowed before each ':' of h= (RFC 6376 3.5)
    lines[-1] += ";"
    put(f"bh={body_hash};", " ")
    put("b=", " ")
    return "\r\n".join(lines).encode("ascii")


def _fold_value(value: str, used: int) -> bytes:
    """The b= value after `used` characters of its line, then lines of its own."""
    first = max(0, _LINE - used)
    pieces = [value[:first]] + [
        " " + value[i : i + _LINE - 1] for i in range(first, len(value), _LINE - 1)
    ]
    return "\r\n".join(pieces).encode("ascii") + b"\r\n"


def read_private_key(path: str, setting: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """The PEM private key in `path`; DkimConfigError naming `setting` when it is unusable."""
    where = f"[email] {setting} {path!r}"
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise DkimConfigError(f"{where} cannot be read: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:  # encrypted: the router has no passphrase to give
        raise DkimConfigError(f"{where} is encrypted; give the key without a passphrase") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimConfigError(f"{where} is not a PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimConfigError(
                f"{where} is an RSA key of {key.key_size} bits; DKIM needs at least {MIN_RSA_BITS}"
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    kind = {
        ec.EllipticCurvePrivateKey: "an EC (ECDSA)",
        dsa.DSAPrivateKey: "a DSA",
        ed448.Ed448PrivateKey: "an Ed448",
    }
    named = next((name for cls, name in kind.items() if isinstance(key, cls)), "another kind of")
    raise DkimConfigError(
        f"{where} is {named} key; DKIM signs with RSA ({MIN_RSA_BITS} bits or more) or Ed25519"
    )


def check_names(config: EmailConfig) -> None:
    """The domain, the selectors and which keys go together (no file is read)."""
    if config.dkim_domain and not _DOMAIN.fullmatch(config.dkim_domain):
        raise DkimConfigError(
            f"[email] dkim_domain {config.dkim_domain!r} is not a domain name like"
            " 'shop.example.jp' (an internationalised domain in its xn-- form)"
        )
    for setting, selector in (
        ("dkim_selector", config.dkim_selector),
        ("dkim_second_selector", config.dkim_second_selector),
    ):
        if selector and not _SELECTOR.fullmatch(selector):
            raise DkimConfigError(
                f"[email] {setting} {selector!r} may hold only letters, digits and '-',"
                " in labels separated by '.'"
            )
    first = (config.dkim_selector, config.dkim_private_key_file)
    second = (config.dkim_second_selector, config.dkim_second_private_key_file)
    if config.dkim_domain and not all(first):
        raise DkimConfigError(
            "[email] dkim_domain needs dkim_selector and dkim_private_key_file as well"
        )
    if not config.dkim_domain and any(first + second):
        raise DkimConfigError(
            "[email] dkim_selector and dkim_private_key_file need dkim_domain as well"
        )
    if any(second) and not all(second):
        raise DkimConfigError(
            "[email] dkim_second_selector and dkim_second_private_key_file go together"
        )
    if config.dkim_second_selector and config.dkim_second_selector == config.dkim_selector:
        raise DkimConfigError("[email] dkim_second_selector must differ from dkim_selector")


def load_signer(config: EmailConfig) -> DkimSigner | None:
    """The signer [email] configures (None without dkim_domain); DkimConfigError if unusable."""
    check_names(config)
    if not config.dkim_domain:
        return None
    keys = [
        DkimKey(
            config.dkim_selector,
            read_private_key(config.dkim_private_key_file, "dkim_private_key_file"),
        )
    ]
    if config.dkim_second_selector:
        keys.append(
            DkimKey(
                config.dkim_second_selector,
                read_private_key(
                    config.dkim_second_private_key_file, "dkim_second_private_key_file"
                ),
            )
        )
    return DkimSigner(config.dkim_domain, keys)


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    pem: bytes  # PKCS#8, unencrypted
    dns_value: str  # the TXT record's text, "v=DKIM1; k=...; p=..."


def generate_key(algorithm: Algorithm, bits: int = MIN_RSA_BITS) -> GeneratedKey:
    """A new private key and the public key's DNS record text (RFC 6376 3.6.1, RFC 8463)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"an RSA DKIM key needs at least {MIN_RSA_BITS} bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return GeneratedKey(pem, f"v=DKIM1; k={algorithm}; p={base64.b64encode(public).decode()}")


def txt_record(selector: str, domain: str, value: str) -> str:
    """The zone-file line: the value in quoted strings of at most 255 bytes each."""
    strings = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{selector}._domainkey.{domain}. IN TXT {strings}"
