"""A real S3 server on 127.0.0.1 for the tests and for development (`make s3`): moto's standalone server
(``pipelines.moto_server``), with its IAM authentication on, so a wrong key or secret is refused as AWS refuses it.

moto keeps objects in memory: what it holds is gone when it stops. It is for trying Relay across processes
and machines' worth of homes on one machine, not for keeping data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from components.child_processes import wait_listening
from components.errors import RelayError
from components.settings import free_ports

REGION = "us-east-1"
USER = "relay"
# The IAM calls that create Relay's user, its policy and its key. moto authenticates every request after
# this many (INITIAL_NO_AUTH_ACTION_COUNT), so these are the only unauthenticated ones.
_SETUP_ACTIONS = 3
_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class LocalS3:
    """A running moto server: where it listens, the key it accepts, and the bucket made for Relay."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    pid: int

    def env(self) -> dict[str, str]:
        """The standard AWS environment for this server (boto3, s3fs, DVC and the AWS CLI all read it)."""
        return {"AWS_ENDPOINT_URL_S3": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key, "AWS_DEFAULT_REGION": REGION}

    def s3_client(self):
        """A boto3 S3 client for this server, with its key."""
        return _client("s3", self.endpoint_url, self.access_key_id, self.secret_access_key)


def _client(service: str, endpoint_url: str, key: str, secret: str):
    import boto3

    return boto3.client(service, endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret)


def _wait_listening(process: subprocess.Popen, endpoint_url: str, log: Path, timeout_s: float = 30) -> None:
    from urllib.parse import urlsplit

    address = urlsplit(endpoint_url)
    problem = wait_listening(process, address.hostname, address.port, timeout_s)
    if problem is not None:
        process.terminate()
        raise RelayError(f"moto's S3 server {problem}: see {log}")


def start_local_s3(log: Path, bucket: str = "relay", port: int | None = None) -> tuple[subprocess.Popen, LocalS3]:
    """Start moto's server on 127.0.0.1 (a free port unless ``port``), create an IAM user allowed ``s3:*`` with
    an access key, and ``bucket`` with that key. Then check that a made-up key is refused: auth is on."""
    port = port or free_ports(1)[0]
    endpoint_url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)}
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("moto_server.py")), "127.0.0.1",
                                    str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(process, endpoint_url, log)
        iam = _client("iam", endpoint_url, "setup", "setup")
        iam.create_user(UserName=USER)
        iam.put_user_policy(UserName=USER, PolicyName="relay-s3", PolicyDocument=json.dumps(_POLICY))
        key = iam.create_access_key(UserName=USER)["AccessKey"]
        server = LocalS3(endpoint_url, key["AccessKeyId"], key["SecretAccessKey"], bucket, process.pid)
        server.s3_client().create_bucket(Bucket=bucket)
        _check_auth_is_on(server)
    except BaseException:
        stop_local_s3(process)
        raise
    return process, server


def _check_auth_is_on(server: LocalS3) -> None:
    from botocore.exceptions import ClientError

    try:
        _client("s3", server.endpoint_url, "AKIANOTAKEY000000000", "wrong").list_objects_v2(Bucket=server.bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] == "InvalidAccessKeyId":
            return
        raise
    raise RelayError(f"moto's S3 server on {server.endpoint_url} accepted a made-up access key: its IAM "
                     "authentication is off (INITIAL_NO_AUTH_ACTION_COUNT was not honoured)")


def stop_local_s3(process: subprocess.Popen) -> None:
    """Stop the server this process started (by its pid), and wait for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    """`make s3`: start the server, print the environment that points Relay at it, serve until Ctrl-C."""
    home = Path(os.environ.get("RELAY_HOME", Path.home() / ".relay"))
    port = int(os.environ["S3_PORT"]) if os.environ.get("S3_PORT") else None
    process, server = start_local_s3(home / "s3" / "moto.log", port=port)
    print(f"moto S3 on {server.endpoint_url} (pid {server.pid}), bucket s3://{server.bucket}, in memory; "
          "Ctrl-C stops it. In another shell:")
    for name, value in server.env().items():
        print(f"  export {name}={value}")
    print(f"  export RELAY_DVC_REMOTE=s3://{server.bucket}/dvc RELAY_RUNS_URI=s3://{server.bucket}/runs "
          f"RELAY_SHARDS_URI=s3://{server.bucket}/shards")
    try:
        process.wait()
    except KeyboardInterrupt:
        stop_local_s3(process)


if __name__ == "__main__":
    main()
