"""One uninterrupted Snakemake build of the demo slice, shared by the slow workflow tests as their reference."""
from __future__ import annotations

import pytest
import yaml

from .helpers import SLICE, audit_log, copy_repo, snakemake


@pytest.fixture(scope="session")
def slice_run(tmp_path_factory):
    """(working copy, slice config file) after `snakemake --configfile slice.yaml` ran to the end, uninterrupted.

    The stages run with the file-access audit on (augmem.audit): their events are in audit_log(working copy)."""
    root = tmp_path_factory.mktemp("slice")
    cfg = root / "slice.yaml"
    cfg.write_text(yaml.safe_dump(SLICE))
    work = copy_repo(root / "repo")
    snakemake(work, "--configfile", str(cfg), extra_env={"AUGMEM_AUDIT_LOG": str(audit_log(work))})
    return work, cfg
