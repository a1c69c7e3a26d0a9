"""The layers hold: ingestion -> providers -> canonical events <- consumers (docs/adr/0002-layers.md).

The contracts live in pyproject.toml's [tool.importlinter]; a back-import or a cycle fails here. And
no module imports a project module inside a function to dodge a cycle: the only imports allowed in
a function body are the ones listed below, each for a reason that is not a cycle.
"""

import ast
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("webhooks", "providers", "canonical", "fulfillment", "notifications", "audit", "accounts", "config", "support")

# (module path, module imported from): why it is imported inside a function.
LOCAL_IMPORTS_ALLOWED = {
    ("webhooks/apps.py", "webhooks"): "AppConfig.ready(): registers signal receivers once apps load",
    ("notifications/apps.py", "notifications.tracking"): "AppConfig.ready(): connects anymail's tracking signal",
    ("accounts/apps.py", "accounts"): "AppConfig.ready(): registers the OpenAPI security scheme",
    ("audit/apps.py", "audit.services"): "a post_migrate receiver: models are not loaded when ready() imports",
    ("config/sentry.py", "audit.redaction"): "init runs from settings, before apps load; config must not import an app at import time",
}


def test_the_import_contracts_hold(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0, "an import contract is broken: run lint-imports"


def _local_imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield node.module, node.lineno
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, node.lineno


def test_no_project_module_is_imported_inside_a_function_to_dodge_a_cycle():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative or "/management/" in relative:
                continue
            for module, line in _local_imports(path):
                if module.split(".")[0] in PACKAGES and (relative, module) not in LOCAL_IMPORTS_ALLOWED:
                    found.append(f"{relative}:{line} imports {module}")
    assert not found, "\n".join(found)
