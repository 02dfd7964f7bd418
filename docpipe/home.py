"""The service's home: owner-only on disk, the secret its Prefect server asks for, and the
key that encrypts the tenants' webhook secrets."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from docpipe.config import Settings

# Everything docpipe writes is for this user alone: the database, the originals, their
# OCR text and the logs are tenants' data.
PRIVATE_UMASK = 0o077
AUTH_STRING_FILE = "prefect-auth-string"
WEBHOOK_KEY_FILE = "webhook-key"
AUTH_USER = "docpipe"


def prepare_home(settings: Settings) -> Path:
    """Create the home owner-only (0700) and make every file created after this 0600.

    The umask is the process's, so the services `docpipe up` starts inherit it. A home
    made by an older docpipe is closed the same way: its top directory becomes 0700,
    which alone keeps every other user out of everything below it.
    """
    os.umask(PRIVATE_UMASK)
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    if home.stat().st_mode & 0o777 != 0o700:
        home.chmod(0o700)
        for entry in home.iterdir():
            with contextlib.suppress(OSError):
                if not entry.is_symlink():
                    entry.chmod(0o700 if entry.is_dir() else 0o600)
    return home


def prefect_auth_string(settings: Settings) -> str:
    """The secret of this installation's Prefect server: the operator's, or one of our own.

    An operator's value (PREFECT_SERVER_API_AUTH_STRING or DOCPIPE_PREFECT_AUTH_STRING)
    wins. Otherwise the first start generates one into the home, owner-only, and every
    later start, worker and CLI command on this home reads it back. It has the form
    `user:password`, so HTTP clients send it as ordinary basic auth.
    """
    if settings.prefect_auth_string is not None:
        return settings.prefect_auth_string.get_secret_value()
    return _private_value(
        settings, AUTH_STRING_FILE, lambda: f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
    )


def webhook_key(settings: Settings) -> str:
    """The key that encrypts the tenants' webhook secrets: DOCPIPE_WEBHOOK_KEY, or one
    generated into the home at first use, as the Prefect secret is (a Fernet key)."""
    if settings.webhook_key is not None:
        return settings.webhook_key.get_secret_value()
    return _private_value(
        settings, WEBHOOK_KEY_FILE, lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
    )


def _private_value(settings: Settings, name: str, make: Callable[[], str]) -> str:
    """The value in the home's owner-only file `name`, made by `make` if there is none."""
    path = settings.home / name
    with contextlib.suppress(FileNotFoundError):
        return _read_private(path)
    prepare_home(settings)
    value = make()
    partial = path.with_name(f".{name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    try:
        # A link never replaces: of two processes starting at once, the first one's wins.
        os.link(partial, path)
    except FileExistsError:
        value = _read_private(path)
    finally:
        partial.unlink()
    return value


def _read_private(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as handle:
        if os.fstat(handle.fileno()).st_mode & 0o077:
            raise PermissionError(f"{path} must be readable by its owner only (chmod 600)")
        return handle.read().strip()


def prefect_auth_headers(settings: Settings) -> dict[str, str]:
    """The header a plain HTTP client sends to the Prefect API, as Prefect's own client does."""
    token = base64.b64encode(prefect_auth_string(settings).encode()).decode()
    return {"Authorization": f"Basic {token}"}
