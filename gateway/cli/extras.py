"""Optional dependencies: which extra brings a library a command needs, and the one line a
user sees when it is missing (never a traceback)."""

from __future__ import annotations

# Top-level module -> the extra of edge-gateway that installs it.
EXTRAS = {"aiohttp": "devcloud"}


def require(module: str) -> None:
    """Import ``module`` now (a ``ModuleNotFoundError`` then names its extra, see
    ``missing_extra``), so a command fails on it before doing anything else."""
    import importlib

    importlib.import_module(module)


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The line to print for ``exc`` if an extra provides the missing module, else None."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    return (
        f"edge-gateway: this command needs {module}, which comes with the '{extra}' extra: "
        f"pip install 'edge-gateway[{extra}]'"
    )
