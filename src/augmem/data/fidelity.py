"""Data-side fidelity switches: which quirks of the original task setup to reproduce.

Each quirk of the original ``task_setup.py`` that changes the task filelists is one named boolean switch (spec section
12). ``reference`` turns every switch on and reproduces the published filelists byte for byte; ``corrected`` turns
every switch off. Label-by-first-appearance (12.1) and the in-place offline prefix shuffle (12.4) are kept in both
settings: they do not change which images a task holds. Training-side switches live with the training code.
"""
from __future__ import annotations

from dataclasses import dataclass

FIDELITIES = ("reference", "corrected")


@dataclass(frozen=True)
class DataSwitches:
    """Quirks of the original task setup; True = behave like the original."""

    inclusive_iid_slices: bool
    """Spec 12.2: iid tasks are cut with label-based ``.loc[a:b]``, inclusive at both ends, so every stream task but
    the last has ``task_size + 1`` rows and neighbouring tasks share their boundary row (offline prefixes likewise
    hold one row more). False: exclusive positional slices ``iloc[t*size:(t+1)*size]`` and ``iloc[:(t+1)*size]``,
    so stream tasks are disjoint and cover every training row once."""

    instance_key_without_class: bool
    """Spec 12.3: an "instance" is keyed on (object, session) only. Toybox and iLab number objects within each class,
    so instances merge the same object number across classes (instance scenario: all data in task 0). False: key on
    (class, object, session)."""

    unstable_instance_sort: bool
    """Spec 12.3: the frames of an instance are sorted by ``im_num`` alone with pandas' default (non-stable)
    quicksort, so ties between merged classes come out in an order that depends on the numpy build. False: a
    stable sort on the full key (class, object, session, im_num)."""


def data_switches(fidelity: str) -> DataSwitches:
    """The switch bundle for a fidelity name: 'reference' (all quirks on) or 'corrected' (all off)."""
    if fidelity == "reference":
        return DataSwitches(inclusive_iid_slices=True, instance_key_without_class=True, unstable_instance_sort=True)
    if fidelity == "corrected":
        return DataSwitches(inclusive_iid_slices=False, instance_key_without_class=False, unstable_instance_sort=False)
    raise ValueError(f"unknown fidelity {fidelity!r}; expected one of {list(FIDELITIES)}")
