"""The SLURM profile on a real single-node Slurm (slurmctld + slurmd + munge on this host). Slow; run by CI as root."""
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("slurm_cluster.sh")


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_slurm_profile_runs_demo_slice_like_local():
    if os.geteuid() != 0:
        pytest.skip("the cluster test installs packages and starts daemons: run it as root (CI does)")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=2300)
    print(proc.stdout[-20000:])
    print(proc.stderr[-5000:])
    assert proc.returncode == 0, "SLURM cluster test failed (logs above)"
    assert "[slurm-test] PASSED" in proc.stdout
