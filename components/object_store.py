"""S3 (and any fsspec URL) as Relay reaches it: the options that point a client at an S3-compatible endpoint,
and one line for each way an S3 remote fails that a user can fix (credentials, bucket, endpoint).

Credentials are never Relay's: boto3, s3fs and DVC read them from the AWS environment (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a pod's role).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from components.errors import RelayError
from components.settings import Settings

_KEY_HELP = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a key this endpoint knows"
# (what S3, botocore or s3fs say, in any of these words) → (what it means, what to do)
_FAILURES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("InvalidAccessKeyId", "does not exist in our records"), "the access key was refused", _KEY_HELP),
    (("SignatureDoesNotMatch", "signature we calculated does not match"), "the secret key was refused", _KEY_HELP),
    (("ExpiredToken", "token included in the request is expired", "RequestExpired"),
     "the credentials have expired", "renew them (a new session token, or the role's) and run the step again"),
    (("Unable to locate credentials", "NoCredentialsError"), "no AWS credentials were found", _KEY_HELP),
    (("NoSuchBucket", "specified bucket does not exist"), "the bucket does not exist",
     "create it (`aws s3 mb s3://BUCKET`) or correct the URL"),
    (("AccessDenied", "Access Denied"), "access was denied",
     "grant this key s3:ListBucket, s3:GetObject and s3:PutObject on the bucket"),
    # A HEAD request's 403 carries no body, so S3 cannot say whether the key, the secret or the policy is wrong.
    (("Forbidden",), "the request was refused (403 Forbidden)",
     f"{_KEY_HELP}, with s3:ListBucket, s3:GetObject and s3:PutObject on the bucket"),
    (("Could not connect to the endpoint URL", "EndpointConnectionError", "Connect timeout on endpoint URL",
      "Cannot connect to host"), "the endpoint is unreachable",
     "check RELAY_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) and that the server is up"),
)


def is_s3(url: str | None) -> bool:
    return bool(url) and url.startswith("s3://")


def storage_options(url: str, settings: Settings) -> dict:
    """fsspec options for ``url``: an s3:// URL goes to the configured S3-compatible endpoint, if any; a local
    one makes its folders as it writes, as object stores need none."""
    if is_s3(url):
        # s3fs otherwise hands back the instance made earlier with the same options, with the credentials the
        # environment held then: renewed credentials would go unread by a long-lived process.
        options: dict = {"skip_instance_cache": True}
        if settings.s3_endpoint_url:
            options["endpoint_url"] = settings.s3_endpoint_url
        return options
    return {"auto_mkdir": True} if url.startswith("file://") or "://" not in url else {}


def s3_failure_reason(message: str) -> str | None:
    """What went wrong and what to do, for an S3 failure described by ``message`` (an exception's text or a
    tool's output); None when it is not one of the failures above."""
    for words, meaning, action in _FAILURES:
        if any(word in message for word in words):
            return f"{meaning}: {action}"
    return None


def describe_remote(url: str, settings: Settings) -> str:
    """``url`` and, for S3, the endpoint it is reached at: what an error names."""
    if is_s3(url):
        return f"{url} (endpoint {settings.s3_endpoint_url or 'AWS'})"
    return url


def probe_s3(url: str, endpoint_url: str | None) -> str | None:
    """What is wrong with the S3 location ``url``, asked of S3 itself after a tool failed without saying (DVC
    reports a missing bucket as missing files, and a HEAD request's 403 has no reason): the bucket missing, the
    key refused, the endpoint unreachable. None when the bucket answers."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    client = session.create_client("s3", endpoint_url=endpoint_url,
                                   region_name=session.get_config_variable("region") or "us-east-1",
                                   config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10))
    try:  # a GET, not a HEAD: its error carries S3's code
        client.list_objects_v2(Bucket=url[len("s3://"):].split("/", 1)[0], MaxKeys=1)
    except Exception as error:  # noqa: BLE001 - whatever S3 or botocore says is the answer
        message = f"{type(error).__name__}: {error}"
        return s3_failure_reason(message) or message
    return None


@contextmanager
def store_failures(url: str, what: str, doing: str, settings: Settings,
                   error: type[RelayError] = RelayError) -> Iterator[None]:
    """Turn a failure to reach ``url`` (the ``what``: "run store", "shard store") into one line naming it and
    saying what to do."""
    try:
        yield
    except Exception as failure:
        message = f"{type(failure).__name__}: {failure}"
        reason = s3_failure_reason(message)
        # botocore's own errors (EndpointConnectionError, NoCredentialsError) are not OSErrors: known ones only
        if reason is None and not isinstance(failure, (OSError, ValueError)):
            raise
        raise error(f"{what} {describe_remote(url, settings)}: {doing} failed: {reason or message}") from None
