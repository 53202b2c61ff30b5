"""What an S3 failure says: one line that names what is wrong and what to do, from S3's, botocore's, s3fs's or
DVC's own words."""

import pytest

from components.object_store import describe_remote, s3_failure_reason, storage_options
from tests.conftest import make_settings


@pytest.mark.parametrize("message, meaning", [
    ("An error occurred (InvalidAccessKeyId) when calling the PutObject operation: ...", "access key was refused"),
    ("PermissionError: The AWS Access Key Id you provided does not exist in our records.", "access key was refused"),
    ("PermissionError: The request signature we calculated does not match the signature you provided.",
     "secret key was refused"),
    ("FileNotFoundError: The specified bucket does not exist", "bucket does not exist"),
    ('EndpointConnectionError: Could not connect to the endpoint URL: "http://127.0.0.1:9/relay"',
     "endpoint is unreachable"),
    ("An error occurred (ExpiredToken) when calling the GetObject operation", "credentials have expired"),
    ("NoCredentialsError: Unable to locate credentials", "no AWS credentials"),
    ("An error occurred (403) when calling the HeadObject operation: Forbidden", "refused (403 Forbidden)"),
    ("An error occurred (AccessDenied) when calling the PutObject operation: Access Denied", "access was denied"),
])
def test_each_s3_failure_a_user_can_fix_gets_its_one_line(message, meaning):
    reason = s3_failure_reason(f"ERROR: failed to push data to the cloud - {message}\nTraceback ...")
    assert meaning in reason and "\n" not in reason


def test_other_failures_are_left_to_their_own_words():
    assert s3_failure_reason("ERROR: failed to push data: disk full") is None


def test_an_s3_remote_is_named_with_its_endpoint_and_a_local_one_makes_its_folders(tmp_path):
    settings = make_settings(tmp_path, s3_endpoint_url="http://127.0.0.1:9000")
    assert describe_remote("s3://bucket/runs/r1", settings) == "s3://bucket/runs/r1 (endpoint http://127.0.0.1:9000)"
    assert storage_options("s3://bucket/runs", settings)["endpoint_url"] == "http://127.0.0.1:9000"
    assert storage_options("file:///tmp/runs", settings) == {"auto_mkdir": True}
    assert describe_remote("s3://b/p", make_settings(tmp_path / "aws")) == "s3://b/p (endpoint AWS)"
