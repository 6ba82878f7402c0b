"""The TLS trust a run uses: system, `api.ca_bundle`, or SSL_CERT_FILE; checked at load time."""

from __future__ import annotations

import os
import ssl
from pathlib import Path


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """System trust, or `api.ca_bundle`, or the file SSL_CERT_FILE names.

    A file that is missing or holds no certificate is a ValueError naming it.
    """
    from_env = os.environ.get("SSL_CERT_FILE") or None
    cafile = ca_bundle or from_env
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as error:
        why = getattr(error, "strerror", None) or "not a PEM file of CA certificates"
        # api.ca_bundle's errors are prefixed with its key path by the config already.
        named = f"{cafile}" if ca_bundle else f"SSL_CERT_FILE {cafile}"
        raise ValueError(f"{named}: {why}") from None
