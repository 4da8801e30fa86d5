"""The skip policy, enforced over tests/: nothing that CI should run can quietly skip there.

* ``pytest.importorskip`` is never used. For the project's own packages it would hide a broken import as a
  skip; for a third-party one it has no ``EM_AGENT_REQUIRE_*`` switch: use ``import_optional(module, FLAG)``.
* A missing dependency skips only through ``skip_or_fail(FLAG, message)`` (``tests/conftest.py``), ``FLAG`` an
  ``EM_AGENT_REQUIRE_*`` switch. Any other ``pytest.skip``, ``pytest.mark.skip`` or ``pytest.mark.skipif`` carries
  a ``# skip-policy: <why this is not a missing dependency>`` comment on its line or the line above.
* ``.ci/run`` exports every ``EM_AGENT_REQUIRE_*`` switch the tests name, so CI fails where a machine lacks one.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CI_RUN = TESTS.parent / ".ci" / "run"
PROJECT_PACKAGES = frozenset({"agent", "backend_client", "converters", "testbed", "semphony"})
SWITCH = re.compile(r"EM_AGENT_REQUIRE_[A-Z0-9_]+")
EXEMPTION = "# skip-policy:"
#: Helpers of tests/conftest.py that skip behind a switch: name -> position of the switch argument.
SWITCHED_HELPERS = {"skip_or_fail": 0, "import_optional": 1}


@dataclass(frozen=True)
class Violation:
    """One breach of the policy, at ``path:line``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _pytest_bindings(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """Names bound to the pytest module, and names bound to its attributes (``from pytest import skip as s``)."""
    modules: set[str] = set()
    attributes: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.asname or alias.name for alias in node.names if alias.name == "pytest")
        elif isinstance(node, ast.ImportFrom) and node.module == "pytest":
            attributes.update({alias.asname or alias.name: alias.name for alias in node.names})
    return modules, attributes


def _pytest_path(node: ast.expr, modules: set[str], attributes: dict[str, str]) -> str | None:
    """``"mark.skipif"`` for ``pytest.mark.skipif`` (however pytest was imported); None for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    if node.id in modules:
        return ".".join(reversed(parts)) or None
    if node.id in attributes:
        return ".".join([attributes[node.id], *reversed(parts)])
    return None


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def _is_project_module(name: str | None) -> bool:
    return name is not None and name.split(".")[0] in PROJECT_PACKAGES


def scan_source(source: str, path: str) -> list[Violation]:
    """Every breach of the policy in one test module's ``source``."""
    tree = ast.parse(source, filename=path)
    lines = source.splitlines()
    modules, attributes = _pytest_bindings(tree)
    found: list[Violation] = []

    def exempt(node: ast.expr) -> bool:
        first, last = node.lineno, node.end_lineno or node.lineno
        return any(EXEMPTION in lines[i - 1] for i in range(max(1, first - 1), last + 1))

    def flag(node: ast.expr, message: str) -> None:
        found.append(Violation(path, node.lineno, message))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            what = _pytest_path(node.func, modules, attributes)
            if what == "importorskip":
                module = _literal(_argument(node, 0, "modname"))
                if _is_project_module(module):
                    flag(node, f"importorskip of the project's own module {module!r}: import it")
                else:
                    flag(node, f"importorskip({module!r}) has no switch: use import_optional(module, FLAG)")
                continue
            helper = node.func.id if isinstance(node.func, ast.Name) else None
            if helper in SWITCHED_HELPERS:
                switch = _argument(node, SWITCHED_HELPERS[helper], "flag")
                text = _literal(switch)
                if not isinstance(switch, ast.Name) and (text is None or not SWITCH.fullmatch(text)):
                    flag(
                        node,
                        f"{helper} needs an EM_AGENT_REQUIRE_* switch, got {ast.unparse(switch or node)}",
                    )
                if helper == "import_optional" and _is_project_module(_literal(_argument(node, 0, "module"))):
                    flag(node, "import_optional of the project's own module: import it")
        if isinstance(node, ast.Call | ast.Attribute):
            target = node.func if isinstance(node, ast.Call) else node
            what = _pytest_path(target, modules, attributes)
            if what in ("skip", "mark.skip", "mark.skipif") and not exempt(node):
                flag(
                    node,
                    f"pytest.{what} without a switch: a missing dependency goes through "
                    f"skip_or_fail(EM_AGENT_REQUIRE_..., message); anything else says why in '{EXEMPTION} ...'",
                )
    # `pytest.mark.skip(...)` is both a call and an attribute: report each place once.
    unique = {(v.line, v.message): v for v in found}
    return sorted(unique.values(), key=lambda v: v.line)


def switches_named(source: str) -> set[str]:
    """The ``EM_AGENT_REQUIRE_*`` switches a test module names (as whole string literals)."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SWITCH.fullmatch(node.value)
    }


def switches_exported(ci_script: str) -> set[str]:
    """The switches a CI script exports as set (``export EM_AGENT_REQUIRE_X=1``)."""
    return set(re.findall(r"^export (EM_AGENT_REQUIRE_[A-Z0-9_]+)=1\s*$", ci_script, flags=re.MULTILINE))


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.is_file())


# ------------------------------------------------------------------------------------------- the real tree


def test_no_test_module_breaks_the_skip_policy() -> None:
    violations = [
        str(v)
        for path in _test_modules()
        for v in scan_source(path.read_text(encoding="utf-8"), str(path.relative_to(TESTS.parent)))
    ]
    assert not violations, "\n".join(violations)


def test_ci_exports_every_switch_the_tests_name() -> None:
    named: set[str] = set()
    for path in _test_modules():
        named |= switches_named(path.read_text(encoding="utf-8"))
    assert {"EM_AGENT_REQUIRE_SAMPLES", "EM_AGENT_REQUIRE_TORCH"} <= named  # the scan sees the switches
    missing = named - switches_exported(CI_RUN.read_text(encoding="utf-8"))
    assert not missing, f".ci/run does not export {sorted(missing)}"


# ------------------------------------------------------------------------------------ the scanner itself


def _messages(source: str) -> list[str]:
    return [v.message for v in scan_source(source, "t.py")]


def test_importorskip_is_refused_for_project_and_third_party_modules() -> None:
    found = _messages('import pytest\nsemphony = pytest.importorskip("agent.devices.semphony")\n')
    assert found == ["importorskip of the project's own module 'agent.devices.semphony': import it"]
    found = _messages('import pytest as pt\npt.importorskip("testbed.semphony_server")\n')
    assert found == ["importorskip of the project's own module 'testbed.semphony_server': import it"]
    found = _messages('from pytest import importorskip\nimportorskip("semphony")\n')
    assert found == ["importorskip of the project's own module 'semphony': import it"]
    found = _messages('import pytest\ntorch = pytest.importorskip("torch")\n')
    assert found == ["importorskip('torch') has no switch: use import_optional(module, FLAG)"]


def test_bare_skips_need_a_switch_or_a_stated_reason() -> None:
    source = 'import pytest\ndef test() -> None:\n    pytest.skip("pika not installed")\n'
    assert len(_messages(source)) == 1
    assert "pytest.skip without a switch" in _messages(source)[0]
    source = 'import pytest\n@pytest.mark.skipif(True, reason="no torch")\ndef test() -> None: ...\n'
    assert "pytest.mark.skipif without a switch" in _messages(source)[0]
    source = "import pytest\n@pytest.mark.skip\ndef test() -> None: ...\n"
    assert "pytest.mark.skip without a switch" in _messages(source)[0]
    exempt = (
        "import pytest\ndef test() -> None:\n"
        "    # skip-policy: a platform guard, not a missing dependency\n"
        '    pytest.skip("Windows only")\n'
    )
    assert _messages(exempt) == []


def test_switched_helpers_need_a_require_switch() -> None:
    good = (
        "from tests.conftest import import_optional, skip_or_fail\n"
        'pika = import_optional("pika", "EM_AGENT_REQUIRE_AMQP")\n'
        'def test() -> None:\n    skip_or_fail("EM_AGENT_REQUIRE_SAMPLES", "no samples")\n'
    )
    assert _messages(good) == []
    bad = (
        'from tests.conftest import skip_or_fail\ndef test() -> None:\n    skip_or_fail("CI", "no samples")\n'
    )
    assert _messages(bad) == ["skip_or_fail needs an EM_AGENT_REQUIRE_* switch, got 'CI'"]
    bad = 'from tests.conftest import import_optional\nimport_optional("agent.roi", "EM_AGENT_REQUIRE_X")\n'
    assert _messages(bad) == ["import_optional of the project's own module: import it"]


def test_switch_lists_are_read_from_sources_and_the_ci_script() -> None:
    # Built from parts so that this module names no switch that .ci/run does not export.
    fake = "EM_AGENT_REQUIRE_" + "A"
    assert switches_named(f'skip_or_fail("{fake}", "m")\nx = "{fake} is set"\n') == {fake}
    script = f"export {fake}=1\n# export {fake}B=1\nexport {fake}C=0\n"
    assert switches_exported(script) == {fake}
