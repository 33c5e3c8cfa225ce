"""Log lines of third-party libraries that say nothing a leanbert user can act on, dropped by
targeted filters (stdlib only, so the command line can install them before anything heavy loads).

torchao 0.18 on a CPU build cannot load its CUDA-only kernels (mxfp8, cutlass) and logs "Failed
to load" for each; torch 2.13 notes that torchao registers its enums with a deprecated pytree
call (a note to torchao, whichever enum). Both happen when torchao is first imported: by
:func:`leanbert.deploy.torch_int8.require_torchao`, and by transformers whenever it loads a model,
so any command may print them. Every other message of these loggers passes.
"""

from __future__ import annotations

import logging

__all__ = ["DropMessages", "QUIET", "quiet_third_party_logs"]


class DropMessages(logging.Filter):
    """Drops the log records whose message holds ``fragment`` and one of ``any_of`` (if given)."""

    def __init__(self, fragment: str, any_of: tuple[str, ...]) -> None:
        super().__init__()
        self.fragment, self.any_of = fragment, any_of

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (self.fragment in message and (not self.any_of or any(f in message for f in self.any_of)))


QUIET = {"torchao": ("Failed to load", ("_C_mxfp8", "_C_cutlass")),
         "torch.utils._pytree": ("is an Enum subclass and is now natively supported", ())}


def quiet_third_party_logs() -> None:
    """Install the filters of :data:`QUIET` (once per logger; calling again does nothing)."""
    for name, (fragment, any_of) in QUIET.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in log.filters):
            log.addFilter(DropMessages(fragment, any_of))
