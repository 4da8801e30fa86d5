"""Render the files of a :class:`~testbed.epu.plan.SessionPlan` as EPU writes them.

Every ``.dm`` and image XML is produced here from our own templates, following the structure documented in
epu-format.md sections 4 and 6: single-line .NET ``DataContractSerializer`` output with no declaration, the real
namespace URIs, prefixes allocated per nesting level as the serializer does (so the same namespace is ``a:`` in
one place and ``c:`` or ``d:`` in another), ``z:Id``/``z:Ref`` object references, ``List<T>`` internals
(``_items`` with nil padding up to the capacity, ``_size``), concurrent dictionaries (``m_serializationArray``) and
plain dictionaries (no-namespace ``Version``/``Comparer``/``HashSize``/``KeyValuePairs``).

Rendering is plain string building: the ``large`` preset writes about 100k files and must stay fast.

The renderers live in one module per kind of EPU file (:mod:`testbed.epu.templates_image`,
:mod:`testbed.epu.templates_session`, :mod:`testbed.epu.templates_gridsquare`,
:mod:`testbed.epu.templates_atlas`), built from :mod:`testbed.epu.templates_common` and
:mod:`testbed.epu.templates_settings`; this module gathers them for the generator.
"""

from __future__ import annotations

from collections.abc import Callable

from testbed.epu.templates_atlas import atlas_dm, sample_dm, screening_root_atlas_dm, screening_session_dm
from testbed.epu.templates_gridsquare import gridsquare_dm
from testbed.epu.templates_image import microscope_image
from testbed.epu.templates_session import epu_session

Renderer = Callable[[], str]

__all__ = [
    "Renderer",
    "atlas_dm",
    "epu_session",
    "gridsquare_dm",
    "microscope_image",
    "sample_dm",
    "screening_root_atlas_dm",
    "screening_session_dm",
]
