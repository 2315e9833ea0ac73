"""The EC2 API driven by the real AWS CLI (`awscli` from PyPI) against the live test server."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compute.models import Instance, InstanceState
from tests.ec2.conftest import REGION, access_key

AWS = str(Path(sys.executable).parent / "aws")


@pytest.fixture
def aws(endpoint, tmp_path):
    """Run `aws ec2 ...` with a key pair and a config of its own (no ~/.aws, no metadata server)."""
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nregion = {REGION}\noutput = json\n")

    def run(key: tuple[str, str], *args: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "HOME": str(tmp_path),
            "AWS_ACCESS_KEY_ID": key[0],
            "AWS_SECRET_ACCESS_KEY": key[1],
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_MAX_ATTEMPTS": "1",
        }
        return subprocess.run(  # noqa: S603 - our own venv's aws, fixed arguments
            [AWS, "ec2", *args, "--endpoint-url", endpoint],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def test_it_runs_and_describes_instances_with_the_aws_cli(aws, eager, alice, tenant_a, host, image, flavor, tmp_path):
    key = access_key(alice, tenant_a)
    user_data = tmp_path / "user-data.sh"
    user_data.write_text("#!/bin/sh\necho from-the-cli\n")
    # when
    run = aws(
        key,
        "run-instances",
        "--image-id",
        f"ami-{image.pk.hex}",
        "--instance-type",
        flavor.name,
        "--count",
        "1",
        "--user-data",
        f"file://{user_data}",
        "--tag-specifications",
        "ResourceType=instance,Tags=[{Key=Name,Value=cli-1},{Key=env,Value=dev}]",
    )
    # then
    assert run.returncode == 0, run.stderr
    instance_id = json.loads(run.stdout)["Instances"][0]["InstanceId"]
    row = Instance.objects.get(pk=instance_id.removeprefix("i-"))
    assert row.name == "cli-1" and row.state == InstanceState.RUNNING
    assert row.user_data == user_data.read_text()
    described = aws(key, "describe-instances", "--filters", "Name=tag:env,Values=dev")
    assert described.returncode == 0, described.stderr
    instances = [i for r in json.loads(described.stdout)["Reservations"] for i in r["Instances"]]
    assert [(i["InstanceId"], i["State"]["Name"], i["PrivateIpAddress"]) for i in instances] == [
        (instance_id, "running", row.ip_address)
    ]
    assert base64  # the CLI base64-encodes --user-data itself


def test_it_shows_the_cli_an_auth_failure_for_a_wrong_secret(aws, alice, tenant_a):
    key_id, _secret = access_key(alice, tenant_a)
    result = aws((key_id, "w" * 40), "describe-instances")
    assert result.returncode != 0
    assert "AuthFailure" in result.stderr
