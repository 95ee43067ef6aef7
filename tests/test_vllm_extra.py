"""The GPU user's install resolves: pip's resolver plans `pip install -e ".[vllm]"` without installing anything and
lands on a vllm inside the extra's range together with the base pin torch==2.13.0.

vllm pins torch exactly (0.33.0 wants torch==2.14.0, 0.27.0-0.32.0 torch==2.13.0), so an open `vllm>=X` extra makes
the resolver backtrack through releases or fail against the base pin. This test asks the real package index.

Cost: the index here serves no PEP 658 metadata, so pip < 25.3 downloads every wheel of the plan in a dry run
(measured: pip 23.2.1, ~3.6 GB written, 3.5 min). pip >= 25.3 with `--use-feature=fast-deps` reads each wheel's
METADATA with HTTP range requests instead (measured: ~90 MB, ~2 min on 2 busy cores), so an older pip is bootstrapped
into a temporary folder first (one ~2 MB wheel). Skipped, with the reason, when the index cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LAZY_DRY_RUN_PIP = Version("25.3")  # first pip whose dry run with fast-deps did not download the vllm wheel here
INDEX_TIMEOUT_S = 20


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement(requirements: list[str], name: str) -> Requirement:
    found = [r for r in map(Requirement, requirements) if canonicalize_name(r.name) == name]
    assert len(found) == 1, f"expected one {name} requirement in {requirements}"
    return found[0]


def test_vllm_stays_out_of_the_base_install_and_the_extra_shares_its_torch_pin():
    """A CPU user's `pip install -e .` must never pull vllm (whose wheel brings a CUDA torch)."""
    base = project()["dependencies"]
    assert not [r for r in map(Requirement, base) if canonicalize_name(r.name).startswith(("vllm", "nvidia"))]
    torch = requirement(base, "torch")
    assert str(torch.specifier).startswith("=="), "the base install pins torch exactly; the extra is chosen to match"
    vllm = requirement(project()["optional-dependencies"]["vllm"], "vllm")
    assert not vllm.specifier.contains("0.33.0"), "vllm 0.33.0 requires torch==2.14.0"
    assert vllm.specifier.contains("0.32.0")


def pip_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """`python -m pip` for this interpreter; a pip >= LAZY_DRY_RUN_PIP goes on PYTHONPATH when the installed one is
    older."""
    import pip

    env = dict(os.environ)
    if Version(pip.__version__) < LAZY_DRY_RUN_PIP:
        target = tmp_path / "pip"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
             "--retries", "0", "--timeout", str(INDEX_TIMEOUT_S), f"pip>={LAZY_DRY_RUN_PIP}"],
            capture_output=True, text=True, timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(f"package index unreachable (installing pip>={LAZY_DRY_RUN_PIP}): {done.stderr.strip()[-300:]}")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "pip"], env


def skip_unless_index_reachable(pip: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(pip + ["index", "versions", "vllm", "--retries", "0", "--timeout", str(INDEX_TIMEOUT_S)],
                          capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0 or "vllm" not in done.stdout:
        pytest.skip(f"package index unreachable (pip index versions vllm): {done.stderr.strip()[-300:]}")


@pytest.mark.slow
def test_vllm_extra_resolves_to_the_pinned_vllm_and_the_base_torch(tmp_path):
    pip, env = pip_command(tmp_path)
    skip_unless_index_reachable(pip, env)
    command = pip + ["install", "--dry-run", "--ignore-installed", "--use-feature=fast-deps", "--quiet",
                     "--report", "-", "-e", f"{ROOT}[vllm]"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, f"`{' '.join(command)}` did not resolve:\n{done.stderr[-3000:]}"
    installs = json.loads(done.stdout)["install"]
    plan = {canonicalize_name(entry["metadata"]["name"]): entry["metadata"] for entry in installs}

    vllm_pin = requirement(project()["optional-dependencies"]["vllm"], "vllm")
    torch_pin = requirement(project()["dependencies"], "torch")
    transformers_pin = requirement(project()["dependencies"], "transformers")
    assert "crs-augment" in plan
    assert vllm_pin.specifier.contains(plan["vllm"]["version"]), plan["vllm"]["version"]
    torch = Version(plan["torch"]["version"])
    assert torch_pin.specifier.contains(torch.public) and torch.public == "2.13.0"  # "+cpu" on a CPU-only index
    # the resolved vllm itself asks for exactly the base torch, and transformers fits both the project and vllm
    vllm_torch = requirement([r for r in plan["vllm"]["requires_dist"] if "extra ==" not in r], "torch")
    assert vllm_torch.specifier.contains(torch.public)
    transformers = plan["transformers"]["version"]
    vllm_transformers = requirement([r for r in plan["vllm"]["requires_dist"] if "extra ==" not in r], "transformers")
    assert transformers_pin.specifier.contains(transformers) and vllm_transformers.specifier.contains(transformers)
