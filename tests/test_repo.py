"""The repository keeps its promises: CI runs the README's test command; the product stays independent."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT


def _readme_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README must show the two set-up commands in a bash block under '## Two commands'"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_shows_the_main_job_and_the_test_command():
    commands = _readme_commands()
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for command in commands:
        assert (REPO_ROOT / command.split()[1]).is_file()


def test_ci_runs_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in [line.strip() for line in ci]


def test_product_does_not_import_reference_code_or_torchvision():
    code = "\n".join(p.read_text() for p in (REPO_ROOT / "src" / "anymask").rglob("*.py"))
    for banned in ("segment_anything", "mobile_sam", "torchvision", "timm"):
        assert not re.search(rf"^\s*(import|from)\s+{banned}\b", code, re.M), banned


def test_importing_anymask_and_building_a_model_loads_no_reference_package():
    probe = (
        "import sys, anymask\n"
        "anymask.load_model('mobile_sam', pretrained=False)\n"
        "bad = [m for m in ('torchvision', 'segment_anything', 'mobile_sam', 'timm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO_ROOT)


def test_every_torch_load_is_weights_only():
    calls = 0
    for path in (REPO_ROOT / "src" / "anymask").rglob("*.py"):
        for call in re.findall(r"torch\.load\((.*?)\)", path.read_text(), re.S):
            assert "weights_only=True" in call, f"{path}: torch.load({call})"
            calls += 1
    assert calls >= 1  # the checkpoint loader itself
