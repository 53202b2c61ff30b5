"""Terraform, validated offline: fmt, init + validate through the machine's provider mirror, checkov."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import TERRAFORM_DIR
MIRROR = Path("/opt/tf-plugins")
AWS_PROVIDER = MIRROR / "registry.terraform.io" / "hashicorp" / "aws"

needs_terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on the PATH")


@needs_terraform
def test_terraform_is_formatted():
    result = subprocess.run(["terraform", "fmt", "-check", "-recursive", str(TERRAFORM_DIR)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"unformatted: {result.stdout}"


@needs_terraform
@pytest.mark.skipif(not AWS_PROVIDER.is_dir(),
                    reason=f"no local provider mirror with hashicorp/aws at {AWS_PROVIDER}; the registry is unreachable")
@pytest.mark.slow  # terraform init
def test_terraform_init_and_validate_through_the_provider_mirror(tmp_path):
    work = tmp_path / "terraform"
    shutil.copytree(TERRAFORM_DIR, work)
    config = tmp_path / "terraform.rc"
    config.write_text(f"""provider_installation {{
  filesystem_mirror {{
    path    = "{MIRROR}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }}
  direct {{
    exclude = ["registry.terraform.io/hashicorp/aws"]
  }}
}}
""")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "TF_CLI_CONFIG_FILE": str(config),
           "TF_IN_AUTOMATION": "1"}
    init = subprocess.run(["terraform", "init", "-backend=false", "-input=false", "-no-color"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stdout + init.stderr
    validate = subprocess.run(["terraform", "validate", "-no-color"], cwd=work, env=env, capture_output=True, text=True)
    assert validate.returncode == 0 and "The configuration is valid" in validate.stdout, validate.stdout + validate.stderr


def test_checkov_finds_no_failures_and_every_skip_has_a_reason(checkov_scan):
    summary = checkov_scan.summary("/terraform/")
    assert summary["failed"] == 0 and summary["passed"] >= 100, summary["failures"]
    skips = re.findall(r"#checkov:skip=([A-Z0-9_]+):?(.*)", "".join(p.read_text() for p in TERRAFORM_DIR.glob("*.tf")))
    assert skips and all(reason.strip() for _, reason in skips)
    assert summary["skipped"] == len(skips)


def test_required_resources_are_declared():
    text = "".join(p.read_text() for p in TERRAFORM_DIR.glob("*.tf"))
    for resource in ('resource "aws_eks_cluster"', 'resource "aws_eks_node_group" "cpu"',
                     'resource "aws_eks_node_group" "gpu"', 'resource "aws_s3_bucket_versioning"',
                     'resource "aws_s3_bucket_server_side_encryption_configuration"',
                     'resource "aws_s3_bucket_public_access_block"', 'resource "aws_ecr_repository"',
                     'resource "aws_iam_role" "irsa"'):
        assert resource in text, resource
    for block in re.findall(r'(?:variable|output) "[^"]+" \{[^}]*\}', text, flags=re.S):
        assert "description" in block, block  # every variable and output is documented
