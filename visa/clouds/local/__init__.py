"""The local cloud: visa's embedded default, one sandboxed session on this machine per instance.

``provider`` is the Provider (its contract); its parts: ``config`` (the cloud's settings),
``accounts`` (the unix accounts sessions run as), ``cgroups``, ``sandbox`` (bubblewrap's
arguments and the isolation report), ``directory`` (an instance's directory: staged, launched,
read back), ``commands`` (commands run inside a session), ``record`` (the session's record on
disk) and ``supervisor``, the script that runs each session outside visa's process and imports
nothing of visa's but the record.
"""

from visa.clouds.local.accounts import host_account
from visa.clouds.local.config import LocalConfig, default_root
from visa.clouds.local.provider import LocalProvider
from visa.clouds.local.sandbox import Isolation

__all__ = ["Isolation", "LocalConfig", "LocalProvider", "default_root", "host_account"]
