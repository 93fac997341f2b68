"""The exceptions Regward raises on purpose.

    RegwardError                  every error meant for a user; str() is one clear line
    ├── InvalidReference          an image reference Docker would refuse
    ├── InvalidAddress            a registry address pattern or host we cannot accept
    ├── InvalidPolicy             a policy document or file that does not follow the format
    ├── SignatureError            a signed policy whose signature does not verify
    └── ConfigError               a setting, flag or file of the server or agent that is wrong

Every message names the bad value and, where it helps, what to do. Parsers raise these at the
edge, so callers never see a bare ValueError or KeyError from user input.
"""


class RegwardError(Exception):
    """Base of every error meant for a user."""


class InvalidReference(RegwardError):
    """An image reference that does not follow Docker's reference grammar."""


class InvalidAddress(RegwardError):
    """A registry address pattern or host that cannot be matched safely."""


class InvalidPolicy(RegwardError):
    """A policy document that does not follow the policy format."""


class SignatureError(RegwardError):
    """A signed policy whose signature does not verify against the pinned key."""


class ConfigError(RegwardError):
    """A wrong setting, flag or configuration file."""
