"""The EC2 API driven by the real AWS SDK for Python (boto3) against the live test server.

Builds run in the server's thread (`eager`) on libvirt's test driver, so an instance reaches
running while RunInstances answers; the waiters still poll DescribeInstances as they would.
Two identical writes in one second would carry one signature (a replay, refused), so a test
that repeats a write lets a second pass first.
"""

from __future__ import annotations

import base64
import time

import pytest
from botocore.exceptions import ClientError

from compute.models import Instance, InstanceState
from tenants.models import ApiToken, AuditEvent, Membership, Quota, SshKey
from tests.conftest import client_for
from tests.ec2.conftest import access_key

WAIT = {"Delay": 1, "MaxAttempts": 20}
USER_DATA = "#cloud-config\nruncmd:\n  - echo 'hello from ec2' > /tmp/hello\n"


def error_code(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


def ami(image) -> str:
    return f"ami-{image.pk.hex}"


@pytest.fixture
def alice_ec2(ec2_client, alice, tenant_a):
    return ec2_client(*access_key(alice, tenant_a))


def test_it_runs_waits_for_stops_starts_and_terminates_an_instance(
    eager, alice_ec2, ec2_client, charlie, tenant_b, tenant_a, host, image, flavor
):
    ec2 = alice_ec2
    # given: a key pair made by the API (its private half comes back once)
    pair = ec2.create_key_pair(KeyName="laptop")
    assert pair["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    # when: an instance is run with it and with user data
    run = ec2.run_instances(
        ImageId=ami(image),
        InstanceType=flavor.name,
        MinCount=1,
        MaxCount=1,
        KeyName="laptop",
        UserData=USER_DATA,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}],
    )
    instance_id = run["Instances"][0]["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    # then: it runs, with our key, our user data (boto3 sent it base64) and an address
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    row = Instance.objects.get(pk=instance_id.removeprefix("i-"))
    assert described["State"] == {"Code": 16, "Name": "running"}
    assert described["PrivateIpAddress"] == row.ip_address
    assert described["KeyName"] == "laptop" and described["InstanceType"] == flavor.name
    assert described["ImageId"] == ami(image)
    assert {"Key": "Name", "Value": "web-1"} in described["Tags"]
    assert row.name == "web-1" and row.user_data == USER_DATA
    assert row.ssh_keys == [SshKey.objects.get(tenant=tenant_a, name="laptop").public_key]
    # and stop, start, terminate go through the same state machine, reported in EC2's words
    stopping = ec2.stop_instances(InstanceIds=[instance_id])["StoppingInstances"][0]
    assert stopping["PreviousState"]["Name"] == "running" and stopping["CurrentState"]["Name"] == "stopping"
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    assert Instance.objects.get(pk=row.pk).state == InstanceState.STOPPED
    ec2.start_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    # another tenant's keys see none of it
    theirs = ec2_client(*access_key(charlie, tenant_b))
    assert theirs.describe_instances()["Reservations"] == []
    with pytest.raises(ClientError) as refused:
        theirs.stop_instances(InstanceIds=[instance_id])
    assert error_code(refused) == "InvalidInstanceID.NotFound"
    assert theirs.describe_key_pairs()["KeyPairs"] == []
    assert Instance.objects.get(pk=row.pk).state == InstanceState.RUNNING
    terminating = ec2.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"][0]
    assert terminating["CurrentState"] == {"Code": 32, "Name": "shutting-down"}
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=WAIT)
    assert Instance.objects.get(pk=row.pk).state == InstanceState.DELETED
    # and the audit log names the access key that did it
    event = AuditEvent.objects.get(action="instance.create", target=str(row.pk))
    assert event.user.email == "alice@example.com" and event.detail["access_key"].startswith("AKIA")


def test_it_refuses_a_signature_made_with_a_wrong_secret(alice_ec2, ec2_client, alice, tenant_a, raw_call):
    key_id, _secret = access_key(alice, tenant_a)
    with pytest.raises(ClientError) as refused:
        ec2_client(key_id, "not-the-secret-" * 3).describe_instances()
    assert error_code(refused) == "AuthFailure"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    with pytest.raises(ClientError) as unknown:
        ec2_client("AKIA" + "A" * 16, "x" * 40).describe_instances()
    assert error_code(unknown) == "AuthFailure"
    # and a region other than ours is refused too: the signature covers it
    status, code, _body = raw_call(key_id, _secret, {"Action": "DescribeRegions"}, region="us-east-1")
    assert (status, code) == (401, "AuthFailure")


def test_it_refuses_a_revoked_key_and_a_member_who_left(ec2_client, alice, tenant_a, bob):
    key_id, secret = access_key(alice, tenant_a)
    client = ec2_client(key_id, secret)
    assert client.describe_regions()["Regions"][0]["RegionName"] == "portal-1"
    # when: revoked through the REST API
    api = client_for(alice)
    listed = api.get("/api/v1/access-keys").json()["results"]
    assert [k["access_key_id"] for k in listed] == [key_id]
    assert "secret_access_key" not in listed[0]
    assert api.delete(f"/api/v1/access-keys/{listed[0]['id']}").status_code == 204
    # then
    with pytest.raises(ClientError) as refused:
        client.describe_availability_zones()
    assert error_code(refused) == "AuthFailure"
    # and a member's keys stop working when they leave the tenant
    bobs = ec2_client(*access_key(bob, tenant_a))
    assert bobs.describe_regions()["Regions"]
    Membership.objects.filter(user=bob, tenant=tenant_a).delete()
    with pytest.raises(ClientError) as left:
        bobs.describe_availability_zones()
    assert error_code(left) == "AuthFailure"


def test_it_refuses_a_stale_date_a_replay_and_an_unknown_action(alice, tenant_a, raw_call, monkeypatch):
    import datetime as dt

    import botocore.auth

    key_id, secret = access_key(alice, tenant_a)
    # a request signed six minutes ago
    stale = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=6)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale)
    assert raw_call(key_id, secret, {"Action": "DescribeRegions"})[:2] == (400, "RequestExpired")
    # and one signed six minutes ahead
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale + dt.timedelta(minutes=12))
    assert raw_call(key_id, secret, {"Action": "DescribeRegions"})[:2] == (400, "RequestExpired")
    monkeypatch.undo()
    # the same signed write sent twice: the second is a replay, refused
    request = raw_call.sign(key_id, secret, {"Action": "DeleteKeyPair", "KeyName": "none"})
    assert raw_call.send(request)[0] == 200
    assert raw_call.send(request)[:2] == (401, "AuthFailure")
    # (an identical read is answered again: SDKs send those within a second of each other)
    request = raw_call.sign(key_id, secret, {"Action": "DescribeRegions"})
    assert raw_call.send(request)[0] == raw_call.send(request)[0] == 200
    # an action we do not offer
    assert raw_call(key_id, secret, {"Action": "CreateVpc", "CidrBlock": "10.0.0.0/16"})[:2] == (
        400,
        "UnsupportedOperation",
    )
    # a parameter the action does not have
    status, code, _body = raw_call.send(raw_call.sign(key_id, secret, {"Action": "DescribeRegions", "x": "1"}))
    assert status == 400 and code == "InvalidParameterValue"


def test_it_takes_a_signed_get_with_the_parameters_in_the_query(alice, tenant_a, raw_call):
    key_id, secret = access_key(alice, tenant_a)
    # parameters that need encoding, in an order other than the canonical one
    params = {"Version": "2016-11-15", "Action": "DescribeKeyPairs", "Filter.1.Name": "key-name"}
    params["Filter.1.Value.1"] = "a b/c+d~é"
    status, code, body = raw_call(key_id, secret, params, method="GET")
    assert (status, code) == (200, None), body
    assert body.startswith("<?xml") and 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"' in body
    # and a request with a parameter changed after signing is refused
    request = raw_call.sign(key_id, secret, {**params, "Action": "DescribeRegions"}, method="GET")
    request.url = request.url.replace("DescribeRegions", "DescribeImages")
    assert raw_call.send(request)[:2] == (401, "AuthFailure")


@pytest.mark.parametrize(
    "params",
    [
        {"Action": "RunInstances", "ImageId": "ami-zz", "InstanceType": "x", "MinCount": "1", "MaxCount": "1"},
        {"Action": "RunInstances", "MinCount": "-1"},
        {"Action": "DescribeInstances", "MaxResults": "1e9"},
        {"Action": "DescribeInstances", "NextToken": "forged"},
        {"Action": "DescribeInstances", "Filter.1.Name": "vpc-id", "Filter.1.Value.1": "x"},
        {"Action": "StopInstances", "InstanceId.1": "i-\x00"},
        {"Action": "DescribeImages", "ImageId.1": "ami-" + "0" * 32},
        {"Action": "CreateTags", "ResourceId.1": "ami-1", "Tag.1.Key": "a"},
        {"Action": "ImportKeyPair", "KeyName": "k", "PublicKeyMaterial": "bm90IGEga2V5"},
        {"Action": "RunInstances", "UserData": "%%%", "MinCount": "1", "MaxCount": "1"},
        {"Action": ""},
    ],
)
def test_it_answers_bad_input_with_an_ec2_error_never_a_500(alice, tenant_a, raw_call, params):
    key_id, secret = access_key(alice, tenant_a)
    status, code, body = raw_call(key_id, secret, params)
    assert 400 <= status < 500, body
    assert code and "<Response><Errors><Error>" in body


def test_it_maps_refusals_to_ec2_codes(alice_ec2, ec2_client, eager, alice, vera, tenant_a, host, image, flavor):
    ec2 = alice_ec2
    cases = [
        (
            lambda: ec2.run_instances(ImageId="ami-" + "1" * 32, InstanceType=flavor.name, MinCount=1, MaxCount=1),
            "InvalidAMIID.NotFound",
        ),
        (
            lambda: ec2.run_instances(ImageId=ami(image), InstanceType="m9.huge", MinCount=1, MaxCount=1),
            "InvalidParameterValue",
        ),
        (
            lambda: ec2.run_instances(
                ImageId=ami(image), InstanceType=flavor.name, MinCount=1, MaxCount=1, KeyName="nope"
            ),
            "InvalidKeyPair.NotFound",
        ),
        (lambda: ec2.describe_instances(InstanceIds=["i-" + "2" * 32]), "InvalidInstanceID.NotFound"),
        (lambda: ec2.describe_key_pairs(KeyNames=["nope"]), "InvalidKeyPair.NotFound"),
        (lambda: ec2.describe_instance_types(InstanceTypes=["m9.huge"]), "InvalidInstanceType"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as refused:
            call()
        assert error_code(refused) == code
    # quota: the tenant may have no more instances
    Quota.objects.filter(tenant=tenant_a).update(instances=0)
    with pytest.raises(ClientError) as over:
        ec2.run_instances(ImageId=ami(image), InstanceType=flavor.name, MinCount=1, MaxCount=1)
    assert error_code(over) == "InstanceLimitExceeded"
    Quota.objects.filter(tenant=tenant_a).update(instances=10)
    # a suspended tenant is blocked
    tenant_a.status = "suspended"
    tenant_a.save(update_fields=["status"])
    with pytest.raises(ClientError) as blocked:
        ec2.run_instances(ImageId=ami(image), InstanceType=flavor.name, MinCount=1, MaxCount=1)
    assert error_code(blocked) == "Blocked"
    tenant_a.status = "active"
    tenant_a.save(update_fields=["status"])
    # state machine: a stopped instance cannot reboot
    run = ec2.run_instances(ImageId=ami(image), InstanceType=flavor.name, MinCount=1, MaxCount=1)
    instance_id = run["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[instance_id])
    with pytest.raises(ClientError) as busy:
        ec2.reboot_instances(InstanceIds=[instance_id])
    assert error_code(busy) == "IncorrectInstanceState"
    # a viewer's key and a read-only key read but do not write
    for reader in (
        ec2_client(*access_key(vera, tenant_a)),
        ec2_client(*access_key(alice, tenant_a, ApiToken.Scope.READ)),
    ):
        assert len(reader.describe_instances()["Reservations"]) == 1
        with pytest.raises(ClientError) as denied:
            reader.start_instances(InstanceIds=[instance_id])
        assert error_code(denied) == "UnauthorizedOperation"
    assert Instance.objects.get(pk=instance_id.removeprefix("i-")).state == InstanceState.STOPPED


def test_it_filters_and_pages_described_instances(alice_ec2, eager, alice, tenant_a, host, image, flavor):
    ec2 = alice_ec2
    # given: six instances from one call, two of them tagged env=prod, one stopped
    run = ec2.run_instances(ImageId=ami(image), InstanceType=flavor.name, MinCount=6, MaxCount=6)
    made = [i["InstanceId"] for i in run["Instances"]]
    assert len(made) == 6 and len(set(made)) == 6
    ec2.create_tags(Resources=made[:2], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": ""}])
    ec2.stop_instances(InstanceIds=[made[5]])
    # when / then: pages of five, then the rest
    first = ec2.describe_instances(MaxResults=5)
    second = ec2.describe_instances(MaxResults=5, NextToken=first["NextToken"])
    ids_of = lambda page: [r["Instances"][0]["InstanceId"] for r in page["Reservations"]]  # noqa: E731
    assert len(ids_of(first)) == 5 and "NextToken" not in second
    assert sorted(ids_of(first) + ids_of(second)) == sorted(made)
    # and boto3's own paginator walks them the same way
    pages = ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5})
    assert sorted(i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]) == sorted(made)

    def described(**filters):
        spec = [{"Name": k, "Values": v} for k, v in filters.items()]
        return sorted(ids_of(ec2.describe_instances(Filters=spec)))

    assert described(**{"tag:env": ["prod"]}) == sorted(made[:2])
    assert described(**{"tag-key": ["team"]}) == sorted(made[:2])
    assert described(**{"instance-state-name": ["stopped", "stopping"]}) == [made[5]]
    assert described(**{"instance-id": [made[3]], "instance-state-name": ["running"]}) == [made[3]]
    tags = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["env"]}])["Tags"]
    assert sorted(t["ResourceId"] for t in tags) == sorted(made[:2]) and tags[0]["Value"] == "prod"
    # and a deleted tag no longer matches
    ec2.delete_tags(Resources=[made[0]], Tags=[{"Key": "env"}])
    assert described(**{"tag:env": ["prod"]}) == [made[1]]
    assert described(**{"tag-key": ["team"]}) == sorted(made[:2])


def test_it_keeps_the_rest_api_and_the_ec2_api_consistent(alice_ec2, eager, alice, tenant_a, host, image, flavor):
    ec2, api = alice_ec2, client_for(alice)
    # created through REST, read through EC2
    created = api.post(
        "/api/v1/instances", {"name": "from-rest", "image": str(image.pk), "flavor": str(flavor.pk)}, format="json"
    ).json()
    seen = ec2.describe_instances(InstanceIds=[f"i-{created['id'].replace('-', '')}"])["Reservations"][0]
    instance = seen["Instances"][0]
    rest = api.get(f"/api/v1/instances/{created['id']}").json()
    assert instance["State"]["Name"] == rest["state"] == "running"
    assert instance["PrivateIpAddress"] == rest["ip_address"]
    assert {"Key": "Name", "Value": "from-rest"} in instance["Tags"] and instance["InstanceType"] == flavor.name
    # created through EC2, read through REST
    run = ec2.run_instances(
        ImageId=ami(image),
        InstanceType=flavor.name,
        MinCount=1,
        MaxCount=1,
        ClientToken="deploy-42",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "from-ec2"}]}],
    )["Instances"][0]
    pk = run["InstanceId"].removeprefix("i-")
    rest = api.get(f"/api/v1/instances/{pk}").json()
    assert rest["name"] == "from-ec2" and rest["state"] == "running" and rest["ip_address"] == run["PrivateIpAddress"]
    assert str(rest["image"]).replace("-", "") == run["ImageId"].removeprefix("ami-")
    # and the ClientToken is the create's idempotency key: the same call again, one instance
    time.sleep(1.1)  # a new second, so a new signature (not a replay)
    again = ec2.run_instances(
        ImageId=ami(image),
        InstanceType=flavor.name,
        MinCount=1,
        MaxCount=1,
        ClientToken="deploy-42",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "from-ec2"}]}],
    )["Instances"][0]
    assert again["InstanceId"] == run["InstanceId"]
    assert Instance.objects.filter(tenant=tenant_a).count() == 2
    with pytest.raises(ClientError) as mismatch:  # the same token with another request
        ec2.run_instances(ImageId=ami(image), InstanceType=flavor.name, MinCount=1, MaxCount=1, ClientToken="deploy-42")
    assert error_code(mismatch) == "IdempotentParameterMismatch"
    # tags set through EC2 are the instance's own tags (the pages show and filter by them)
    ec2.create_tags(Resources=[run["InstanceId"]], Tags=[{"Key": "Env", "Value": "Prod"}])
    assert list(Instance.objects.get(pk=pk).tags.values_list("name", flat=True)) == ["env:prod"]
    # and a rename through REST is the Name tag
    assert api.patch(f"/api/v1/instances/{pk}", {"name": "renamed"}, format="json").status_code == 200
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [run["InstanceId"]]}])["Tags"]
    assert {(t["Key"], t["Value"]) for t in tags} == {("Name", "renamed"), ("env", "prod")}


def test_it_imports_lists_and_deletes_key_pairs(alice_ec2, alice, tenant_a):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    imported = alice_ec2.import_key_pair(KeyName="desk", PublicKeyMaterial=line)
    assert imported["KeyName"] == "desk" and imported["KeyFingerprint"]
    with pytest.raises(ClientError) as twice:
        alice_ec2.import_key_pair(KeyName="desk2", PublicKeyMaterial=line)
    assert error_code(twice) == "InvalidKeyPair.Duplicate"
    listed = alice_ec2.describe_key_pairs()["KeyPairs"]
    assert [(k["KeyName"], k["KeyType"]) for k in listed] == [("desk", "ed25519")]
    assert client_for(alice).get("/api/v1/ssh-keys").json()["results"][0]["name"] == "desk"
    alice_ec2.delete_key_pair(KeyName="desk")
    assert not SshKey.objects.filter(tenant=tenant_a).exists()
    assert base64  # (boto3 base64-encodes PublicKeyMaterial itself)
