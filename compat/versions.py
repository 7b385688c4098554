"""Version guards shared by the compat modules."""
from __future__ import annotations

from importlib import metadata

from core.errors import UserError


class CompatError(UserError):
    """A feature that reaches into a library's private names, asked of a version it was not tested with."""


def require(package: str, tested: tuple[str, ...], feature: str, instead: str) -> None:
    """Raise CompatError unless the installed `package` is one of `tested`."""
    found = metadata.version(package)
    if found not in tested:
        raise CompatError(f"{feature} uses private parts of {package} tested with {package} "
                          f"{' / '.join(tested)} only, and this is {package} {found}. {instead} "
                          f"(or install {package}=={tested[-1]}).")
