"""Hardened XML loading and .NET DataContract reading helpers (internal).

Loading: size cap and DOCTYPE/ENTITY refusal before parsing; an lxml parser that resolves no entities, loads
no DTD and never touches the network; lxml errors translated into the package's exceptions, with truncated
input (a well-formed prefix that ended early) told apart from malformed input.

Reading: elements are matched by namespace URI + local name (Clark notation), never by prefix; ``z:Ref`` is
resolved to the element carrying the matching ``z:Id`` (map built lazily, only when a reference is met);
``i:nil`` is null unless the element is a reference; ``List<T>`` honours ``_size`` and skips nil slots.
Children are looked up through per-element dictionaries because that is several times faster than ``find``.
"""

from __future__ import annotations

import operator
import os
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from lxml import etree

from converters.errors import IncompleteFileError, MalformedFileError, UnsafeFileError

DC = "http://schemas.datacontract.org/2004/07/"
NS_EPU = DC + "Applications.Epu.Persistence"
NS_EPU_OLD = DC + "Fei.Applications.Epu.Persistence"
NS_T = DC + "Fei.Applications.Common.Types"
NS_SO = DC + "Fei.SharedObjects"
NS_GA = DC + "Applications.SciencesAppsShared.GridAtlas.Persistence"
NS_GAD = DC + "Applications.SciencesAppsShared.GridAtlas.Datamodel"
NS_SCR = DC + "Applications.SciencesAppsShared.GridAtlas.Persistence.Screening"
NS_AA = DC + "Applications.SciencesAppsShared.Types.AtlasAlignment"
NS_SAT = DC + "Applications.SciencesAppsShared.Types"
NS_GEN = DC + "System.Collections.Generic"
NS_DRAW = DC + "System.Drawing"
NS_SYS = DC + "System"
NS_FT = DC + "Fei.Types"
NS_FCT = DC + "Fei.Common.Types"
NS_OMP = DC + "Fei.Applications.Common.Omp.Interface"
NS_ARR = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
NS_Z = "http://schemas.microsoft.com/2003/10/Serialization/"
NS_I = "http://www.w3.org/2001/XMLSchema-instance"
NS_XS = "http://www.w3.org/2001/XMLSchema"

Z_ID = f"{{{NS_Z}}}Id"
Z_REF = f"{{{NS_Z}}}Ref"
Z_ASSEMBLY = f"{{{NS_Z}}}Assembly"
I_NIL = f"{{{NS_I}}}nil"
I_TYPE = f"{{{NS_I}}}type"

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Default size cap: far above the largest known EPU file (a 570-hole grid-square ``.dm`` is 2.3 MB)."""

Element = etree._Element


def q(ns: str, local: str) -> str:
    """Clark name ``{ns}local`` (``local`` alone for the empty namespace)."""
    return f"{{{ns}}}{local}" if ns else local


def local_name(tag: str) -> str:
    """Local part of a Clark name."""
    return tag.rpartition("}")[2]


def element_path(el: Element) -> str:
    """``/``-joined local names from the root to ``el``: how errors name an element."""
    names = [local_name(str(a.tag)) for a in el.iterancestors()]
    names.reverse()
    names.append(local_name(str(el.tag)))
    return "/".join(names)


def _make_parser() -> etree.XMLParser:
    """The hardened parser: no entity resolution, no DTD, no network, comments and PIs dropped."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


class _ThreadParser(threading.local):
    """One parser per thread: lxml parsers must not be shared across threads, and building one per document
    cost a few percent of parsing a small image XML. (Names are interned in lxml's per-thread dictionary
    whichever parser is used, so reuse does not change memory use.)"""

    def __init__(self) -> None:
        self.parser = _make_parser()


_THREAD = _ThreadParser()


def _refuse_declarations(data: bytes, path: str) -> None:
    """Refuse ``<!DOCTYPE``/``<!ENTITY`` (and any other markup declaration) before lxml sees the bytes."""
    # Search for the rare "!" (memchr-fast) rather than "<!" ("<" is everywhere, which makes that search
    # slow).
    index = data.find(b"!")
    while index != -1:
        start = index - 1
        if start >= 0 and data[start] == 0x3C:
            tail = data[start : start + 9]
            allowed = tail.startswith((b"<!--", b"<![CDATA[")) or (
                # A file cut inside "<!--" must read as truncated, not as a declaration.
                start + len(tail) == len(data) and (b"<!--".startswith(tail) or b"<![CDATA[".startswith(tail))
            )
            if not allowed:
                raise UnsafeFileError(
                    path, "markup declaration (DOCTYPE/ENTITY) refused; EPU files never contain one"
                )
        index = data.find(b"!", index + 1)


def _is_truncated(data: bytes) -> bool:
    """True when ``data`` is a well-formed prefix of some document that simply ended early.

    The bytes are fed to a push parser: a malformation in the content makes ``feed`` fail, while a document
    that is fine so far but unfinished fails only at ``close``.
    """
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=False
    )
    try:
        parser.feed(data)
    except etree.XMLSyntaxError:
        return False
    try:
        parser.close()
    except etree.XMLSyntaxError:
        return True
    return False


def load_bytes(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """Read a file under the size cap; empty -> incomplete, unreadable -> malformed."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise UnsafeFileError(p, f"file is {size} bytes, over the {max_bytes}-byte cap")
        with p.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise IncompleteFileError(p, "file disappeared before it could be read") from exc
    except IsADirectoryError as exc:
        raise MalformedFileError(p, "is a directory, not a file") from exc
    except OSError as exc:
        raise MalformedFileError(p, f"cannot read file: {exc}") from exc
    if len(data) > max_bytes:
        raise UnsafeFileError(p, f"file grew over the {max_bytes}-byte cap while being read")
    return data


def parse_xml(data: bytes, path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Element:
    """Parse ``data`` safely into a root element, translating every lxml failure."""
    name = str(path)
    if len(data) > max_bytes:
        raise UnsafeFileError(name, f"document is {len(data)} bytes, over the {max_bytes}-byte cap")
    if not data or data.isspace():  # what ``not data.strip()`` says, without copying the document
        raise IncompleteFileError(name, "file is empty")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        # EPU writes UTF-8; the declaration scan below works on bytes, so other encodings are normalised
        # first.
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedFileError(name, f"invalid UTF-16: {exc}") from exc
        data = data.replace(b'encoding="utf-16"', b'encoding="utf-8"', 1)
    _refuse_declarations(data, name)
    try:
        root = etree.fromstring(data, _THREAD.parser)
    except etree.XMLSyntaxError as exc:
        if _is_truncated(data):
            raise IncompleteFileError(name, f"document ended early ({exc.msg})") from exc
        raise MalformedFileError(name, f"not well-formed XML: {exc.msg}") from exc
    except (ValueError, etree.LxmlError) as exc:
        raise MalformedFileError(name, f"cannot parse XML: {exc}") from exc
    if root is None:  # pragma: no cover - lxml raises for empty documents; kept for the type checker
        raise IncompleteFileError(name, "no root element")
    # Defence in depth (the byte scan above already refuses declarations): never accept a document type.
    if root.getroottree().docinfo.internalDTD is not None:
        raise UnsafeFileError(name, "DOCTYPE refused")
    return root


# Attribute names as UTF-8 bytes: lxml re-encodes and validates a ``str`` name on every ``get``, which made
# the ``z:Ref`` / ``i:nil`` checks the largest single cost of reading an image XML (measured ~2x per call).
Z_REF_KEY = Z_REF.encode()
Z_ID_KEY = Z_ID.encode()
I_NIL_KEY = I_NIL.encode()
I_TYPE_KEY = I_TYPE.encode()

_TAG: Callable[[Element], str] = operator.attrgetter("tag")
children: Callable[[Element], list[Element]] = operator.itemgetter(slice(None))
"""``children(el)``: the children of ``el`` as a list (``el[:]``).

Slicing builds the list in C; ``for child in el`` creates an iterator object first, which costs more than
reading the two or three children of a typical DataContract member (the lxml stubs declare only integer
indexes, hence the ``itemgetter`` rather than a bare slice)."""


class Reader:
    """Typed access to one parsed DataContract document; errors name the file and the element.

    Hot paths avoid attribute reads where they cannot change the result: ``z:Ref`` is not read at all in a
    document promised free of references (``has_refs=False``), and ``i:nil`` is not read on an element
    without children when only its children matter.
    """

    __slots__ = ("_ids", "has_refs", "path", "root")

    def __init__(self, root: Element, path: str | Path, *, has_refs: bool = True) -> None:
        """``has_refs=False`` promises that the document has no ``z:Ref`` (see :func:`mentions_ref`), which lets
        readers skip the ``z:Ref`` read at every step (it could not change a result)."""
        self.root = root
        self.path = str(path)
        self.has_refs = has_refs
        self._ids: dict[str, Element] | None = None

    # -- errors ----------------------------------------------------------------------------------------------
    def malformed(
        self, detail: str, el: Element | None = None, child: str | None = None
    ) -> MalformedFileError:
        """A :class:`MalformedFileError` naming this file and ``el`` (plus a missing ``child``)."""
        where = element_path(el) if el is not None else None
        if child is not None:
            where = f"{where}/{local_name(child)}" if where else local_name(child)
        return MalformedFileError(self.path, detail, element=where)

    # -- structure -------------------------------------------------------------------------------------------
    def deref(self, el: Element) -> Element:
        """Resolve ``z:Ref`` to the element with that ``z:Id`` (same element when it is not a reference)."""
        if not self.has_refs:
            return el
        ref = el.get(Z_REF_KEY)
        if ref is None:
            return el
        return self._resolve(el, ref)

    def _resolve(self, el: Element, ref: str) -> Element:
        """The element whose ``z:Id`` is ``ref`` (the id map is built on the first reference met)."""
        if self._ids is None:
            # Only elements that carry a z:Id, found by a C-level XPath walk (no proxy for the others);
            # document order keeps the last-one-wins rule for duplicate ids.
            found = _WITH_Z_ID(self.root)
            elements = found if isinstance(found, list) else []
            self._ids = {str(e.get(Z_ID_KEY)): e for e in elements if isinstance(e, etree._Element)}
        target = self._ids.get(ref)
        if target is None:
            raise self.malformed(f"z:Ref={ref} points to no z:Id", el)
        return target

    @staticmethod
    def is_nil(el: Element) -> bool:
        """``i:nil="true"`` (only meaningful after :meth:`deref`)."""
        return el.get(I_NIL_KEY) == "true"

    def kids(self, el: Element | None) -> dict[str, Element]:
        """Children of ``el`` (dereferenced) by Clark name; ``{}`` for None/nil.

        DataContract objects have unique member names, so a plain dict is exact for them (for repeated
        children, such as list items, use :meth:`elements`). The parser drops comments and PIs and entity
        references cannot survive the declaration check, so every child is an element.
        """
        if el is None:
            return {}
        if self.has_refs:
            ref = el.get(Z_REF_KEY)
            if ref is not None:
                el = self._resolve(el, ref)
        # An element without children gives {} whether or not it is nil: read i:nil only when it matters.
        if not len(el) or el.get(I_NIL_KEY) == "true":
            return {}
        found = children(el)
        # C-level loops (no per-child bytecode): the cost left is lxml's, one proxy and one tag per child.
        return dict(zip(map(_TAG, found), found, strict=True))

    def child(self, el: Element | None, tag: str) -> Element | None:
        """First child ``tag`` of ``el``, dereferenced; ``None`` when missing or nil."""
        if el is None:
            return None
        el = self.deref(el)
        found = next(el.iterchildren(tag), None)
        if found is None:
            return None
        found = self.deref(found)
        return None if found.get(I_NIL_KEY) == "true" else found

    def elements(self, el: Element | None) -> Iterator[Element]:
        """Element children of ``el`` (dereferenced container); nothing for None/nil."""
        if el is None:
            return
        el = self.deref(el)
        if not len(el) or el.get(I_NIL_KEY) == "true":
            return
        for child in children(el):
            if isinstance(child.tag, str):
                yield child

    def list_items(self, el: Element | None) -> list[Element]:
        """Items of a serialised ``List<T>`` (``_items`` + ``_size``): the first ``_size`` non-nil items."""
        kids = self.kids(el)
        items_el = next((v for k, v in kids.items() if local_name(k) == "_items"), None)
        size_el = next((v for k, v in kids.items() if local_name(k) == "_size"), None)
        if items_el is None:
            return []
        items = [self.deref(c) for c in self.elements(items_el)]
        items = [c for c in items if c.get(I_NIL_KEY) != "true"]
        if size_el is not None:
            size = self.as_int(size_el)
            if size is not None and size >= 0:
                items = items[:size]
        return items

    def pairs(self, el: Element | None) -> Iterator[tuple[Element, Element | None]]:
        """(key, value) elements of either dictionary shape, matching ``KeyValuePairOf*`` by local-name
        prefix.

        ``ConcurrentDictionary``: ``arr:m_serializationArray/gen:KeyValuePairOf...``; ``Dictionary``:
        ``KeyValuePairs`` (no namespace) ``/gen:KeyValuePairOf...``. The hashed suffix is ignored.
        """
        container = None
        for tag, child in self.kids(el).items():
            name = local_name(tag)
            if name in ("m_serializationArray", "KeyValuePairs"):
                container = child
                break
        for pair in self.elements(container):
            if not local_name(str(pair.tag)).startswith("KeyValuePairOf"):
                continue
            pk = self.kids(pair)
            key = pk.get(KEY)
            if key is None:
                raise self.malformed("dictionary entry without a key", pair)
            value = pk.get(VALUE)
            if value is not None:
                value = self.deref(value)
                if value.get(I_NIL_KEY) == "true":
                    value = None
            yield self.deref(key), value

    # -- values ----------------------------------------------------------------------------------------------
    def text(self, el: Element | None) -> str | None:
        """Text of ``el`` after dereferencing; ``None`` for missing or nil, ``""`` for empty."""
        if el is None:
            return None
        text = el.text
        if self.has_refs:
            ref = el.get(Z_REF_KEY)
            if ref is not None:
                el = self._resolve(el, ref)
                text = el.text
        if el.get(I_NIL_KEY) == "true":
            return None
        return text or ""

    def as_str(self, el: Element | None) -> str | None:
        """Stripped text, ``None`` for missing/nil (an empty element gives ``""``)."""
        text = self.text(el)
        return None if text is None else text.strip()

    def as_float(self, el: Element | None) -> float | None:
        """Float (``INF``/``NaN`` as .NET writes them accepted); ``None`` if missing, nil or empty."""
        if el is None:
            return None
        text = el.text
        if self.has_refs:
            ref = el.get(Z_REF_KEY)
            if ref is not None:
                el = self._resolve(el, ref)
                text = el.text
        # A nil element has no text, so the text test covers i:nil without reading the attribute.
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:
            if not text.strip():
                return None
            raise self.malformed(f"expected a number, got {text[:40]!r}", el) from None

    def as_int(self, el: Element | None) -> int | None:
        """Integer value; ``None`` if missing/nil/empty."""
        if el is None:
            return None
        text = el.text
        if self.has_refs:
            ref = el.get(Z_REF_KEY)
            if ref is not None:
                el = self._resolve(el, ref)
                text = el.text
        if text is None:
            return None
        try:
            return int(text)
        except ValueError:
            if not text.strip():
                return None
            raise self.malformed(f"expected an integer, got {text[:40]!r}", el) from None

    def as_bool(self, el: Element | None) -> bool | None:
        """``true``/``false`` (case-insensitive, as .NET may write ``True``), also ``1``/``0``."""
        text = self.text(el)
        if text is None:
            return None
        # Exact spellings first (what .NET writes); everything else takes the tolerant path.
        if text == "true":
            return True
        if text == "false":
            return False
        if not text.strip():
            return None
        value = text.strip().lower()
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise self.malformed(f"expected a boolean, got {text[:40]!r}", el)

    def as_datetime(self, el: Element | None) -> datetime | None:
        """ISO-8601 datetime, timezone kept (``Z`` -> UTC); 7 fractional digits accepted."""
        text = self.text(el)
        if text is None or not text.strip():
            return None
        value = text.strip()
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
        # Python 3.11 accepts up to 7 fraction digits, but not more; trim longer fractions before giving up.
        head, dot, rest = value.partition(".")
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            try:
                return datetime.fromisoformat(f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}")
            except ValueError:
                pass
        raise self.malformed(f"expected an ISO-8601 datetime, got {value[:40]!r}", el)

    def require(self, el: Element | None, parent: Element, tag: str) -> str:
        """Non-empty stripped text of a required element, or a :class:`MalformedFileError` naming it."""
        value = self.as_str(el)
        if not value:
            raise self.malformed("required element missing or empty", parent, tag)
        return value


# "descendant-or-self" rather than "//": the latter materialises every node first (measured 2.5x slower).
_WITH_Z_ID = etree.XPath("descendant-or-self::*[@z:Id]", namespaces={"z": NS_Z})


KEY = q(NS_GEN, "key")
VALUE = q(NS_GEN, "value")


# "Ref", any run of whitespace, "=": how every z:Ref attribute starts (XML allows whitespace around "=").
_REF_ATTRIBUTE = re.compile(rb"Ref[ \t\r\n\x0b\x0c]*=")


def mentions_ref(data: bytes) -> bool:
    """Whether ``data`` may contain a ``Ref`` attribute (``z:Ref="..."``); false positives are harmless.

    True when some ``Ref`` is followed, after any whitespace, by ``=``: every ``z:Ref`` attribute is, so
    ``False`` is a guarantee that :class:`Reader` may skip dereferencing. Image XMLs name
    ``ReferenceTransformation`` and few other words with an ``R``, so hopping between ``R`` bytes (``memchr``)
    is several times faster than searching for ``Ref`` itself; documents with many ``R`` bytes switch to that
    search after a few hops.
    """
    find, at = data.find, _REF_ATTRIBUTE.match
    index = find(b"R")
    hops = 0
    while index != -1 and hops < 64:
        if data.startswith(b"Ref", index) and at(data, index):
            return True
        index = find(b"R", index + 1)
        hops += 1
    if index == -1:
        return False
    index = find(b"Ref", index)
    while index != -1:
        if at(data, index):
            return True
        index = find(b"Ref", index + 3)
    return False


def assembly_version(root: Element) -> str | None:
    """``Version=`` field of the root ``z:Assembly`` (the real software version of a ``.dm`` file)."""
    assembly = root.get(Z_ASSEMBLY)
    if not assembly:
        return None
    for part in assembly.split(","):
        key, _, value = part.strip().partition("=")
        if key == "Version" and value:
            return value
    return None
