"""The subset of the Pub/Sub subscription filter language that Garo relies on.

A department's subscription filters on the ``department`` attribute, so the fake
must evaluate filters the way Pub/Sub does and, just as importantly, reject the
filters Pub/Sub rejects (a typo in a filter must fail at ``CreateSubscription``,
not silently deliver nothing). Supported, as documented by Google:

- ``attributes.KEY = "v"``, ``attributes.KEY != "v"``, ``attributes:KEY`` (has key)
- ``hasPrefix(attributes.KEY, "p")``
- ``NOT``, ``AND``, ``OR`` (upper case only) and parentheses; ``AND`` and ``OR``
  may not be mixed at one level without parentheses; at most 256 bytes.

Keys are letters, digits, ``_`` and ``-``, or any text in backticks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Predicate = Callable[[Mapping[str, str]], bool]

MAX_FILTER_BYTES = 256

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<op>!=|=|:|\(|\)|,|\.)
    | (?P<bkey>`[^`]+`)
    | (?P<word>[A-Za-z0-9_-]+)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """The filter is not valid Pub/Sub filter syntax (Pub/Sub answers INVALID_ARGUMENT)."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FilterError(f"unexpected character at offset {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, kind: str, value: str | None = None) -> str:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            raise FilterError(f"expected {value or kind}, got {tok[1] if tok else 'end of filter'!r}")
        self.i += 1
        return tok[1]

    def expr(self) -> Predicate:
        terms = [self.term()]
        joiner = ""
        while (tok := self.peek()) is not None and tok[0] == "word" and tok[1] in ("AND", "OR"):
            if joiner and tok[1] != joiner:
                raise FilterError("AND and OR must be separated by parentheses")
            joiner = tok[1]
            self.i += 1
            terms.append(self.term())
        if joiner == "AND":
            return lambda a: all(t(a) for t in terms)
        if joiner == "OR":
            return lambda a: any(t(a) for t in terms)
        return terms[0]

    def term(self) -> Predicate:
        tok = self.peek()
        if tok == ("word", "NOT"):
            self.i += 1
            inner = self.term()
            return lambda a: not inner(a)
        if tok == ("op", "("):
            self.i += 1
            inner = self.expr()
            self.take("op", ")")
            return inner
        if tok == ("word", "hasPrefix"):
            self.i += 1
            self.take("op", "(")
            key = self.attribute_key(".")
            self.take("op", ",")
            prefix = self.string()
            self.take("op", ")")
            return lambda a: key in a and a[key].startswith(prefix)
        if tok is not None and tok[0] == "word" and tok[1] == "attributes":
            self.i += 1
            sep = self.take("op")
            if sep == ":":
                key = self.key()
                return lambda a: key in a
            if sep != ".":
                raise FilterError(f"expected '.' or ':' after attributes, got {sep!r}")
            key = self.key()
            op = self.take("op")
            if op not in ("=", "!="):
                raise FilterError(f"expected = or !=, got {op!r}")
            value = self.string()
            if op == "=":
                return lambda a: a.get(key) == value
            return lambda a: a.get(key) != value
        raise FilterError(f"unexpected {tok[1] if tok else 'end of filter'!r}")

    def attribute_key(self, sep: str) -> str:
        self.take("word", "attributes")
        self.take("op", sep)
        return self.key()

    def key(self) -> str:
        tok = self.peek()
        if tok is None or tok[0] not in ("word", "bkey"):
            raise FilterError("expected an attribute key")
        self.i += 1
        return tok[1].strip("`")

    def string(self) -> str:
        raw = self.take("str")[1:-1]
        return re.sub(r"\\(.)", r"\1", raw)


def compile_filter(text: str) -> Predicate:
    """Parse a filter; an empty filter matches every message. Raise FilterError if invalid."""
    if len(text.encode()) > MAX_FILTER_BYTES:
        raise FilterError(f"filter is longer than {MAX_FILTER_BYTES} bytes")
    if not text.strip():
        return lambda _a: True
    parser = _Parser(text)
    predicate = parser.expr()
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek()!r} after a complete expression")
    return predicate
