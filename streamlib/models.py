"""The base of every settings model (the core's, the Bus's and the binders'), and TLS settings.

Keys are kebab-case in configuration (``max-attempts``) and snake_case in code; unknown keys are
errors, so a misspelt setting fails at start-up instead of being ignored.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from .errors import ConfigError


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class SettingsModel(BaseModel):
    """A frozen pydantic model whose fields are set by their kebab-case names."""

    model_config = ConfigDict(
        alias_generator=_kebab, populate_by_name=True, extra="forbid", frozen=True
    )


class TlsSettings(SettingsModel):
    """TLS towards a broker. A TLS section turns TLS on unless ``enabled`` is false; without
    ``ca-file`` the system's trusted CAs are used."""

    enabled: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    """The client certificate, for brokers that authenticate clients by certificate."""
    key_file: Path | None = None
    key_password: SecretStr | None = None
    verify: bool = True
    """Check the broker's certificate (and host name); false accepts any certificate."""
    check_hostname: bool = Field(
        True, validation_alias=AliasChoices("check-hostname", "check_hostname")
    )
    """Check that the broker's certificate names the host connected to."""

    def context(self, key: str) -> ssl.SSLContext:
        """The client context these settings describe; ConfigError naming ``key`` when a
        file cannot be read."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                context.load_cert_chain(
                    str(self.cert_file),
                    str(self.key_file) if self.key_file else None,
                    self.key_password.get_secret_value() if self.key_password else None,
                )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(key, f"cannot load TLS files: {exc.strerror or exc}") from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif not self.check_hostname:
            context.check_hostname = False
        return context
