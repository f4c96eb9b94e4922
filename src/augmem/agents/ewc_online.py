"""Online EWC: EWC with one slot whose Fisher accumulates over tasks (spec 6.2, the original's EWC_online factory)."""
from __future__ import annotations

from augmem.agents.ewc import EWC


class EWCOnline(EWC):
    """Omega <- Omega_old + Fisher_new in slot 1. Under reference the addition is in place on the stored tensor every
    epoch (spec 12.23); under corrected it happens once per task on a copy."""

    name = "EWCOnline"
    online_reg = True
