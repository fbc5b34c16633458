"""What an s3: location holds before safehold lets restic create a repository there.

restic's `init` writes its files beside whatever a prefix already holds: a URL naming the bucket
while the repository lives at `bucket/safehold` would get a second, empty repository there, and
every point would seem gone. Listing needs an S3 client of its own: restic lists nothing outside a
repository.
"""

from __future__ import annotations

from safehold.config import s3_location
from safehold.errors import RepositoryError
from safehold.secrets import Secret

# One listing page: enough to name what is there and to find a repository one level down.
LIST_LIMIT = 1000
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "aws_access_key_id", "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
               "AWS_SESSION_TOKEN": "aws_session_token"}


def stored_keys(name: str, url: str, env: dict[str, Secret]) -> list[str]:
    """Up to LIST_LIMIT object keys under the URL's prefix, relative to it, with the credentials restic gets.

    The repository's `env` comes first; what it leaves out boto3 reads where restic does too (safehold's
    own environment, AWS_DEFAULT_REGION included, then the usual AWS files).
    """
    import boto3
    import botocore.exceptions

    scheme, endpoint, bucket, prefix = s3_location(url)
    given = {key: value.reveal() for key, value in env.items()}
    client = boto3.client("s3", endpoint_url=f"{scheme}://{endpoint}", region_name=given.get("AWS_DEFAULT_REGION"),
                          **{arg: given[key] for key, arg in CREDENTIALS.items() if key in given})
    start = f"{prefix}/" if prefix else ""
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=start, MaxKeys=LIST_LIMIT)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise RepositoryError(f"repository {name}: cannot list what the bucket holds under {start or '/'} ({exc})",
                              "the credentials must allow listing the bucket (restic needs it too)") from None
    return [item["Key"].removeprefix(start) for item in listed.get("Contents", [])]


def refuse_occupied(name: str, url: str, env: dict[str, Secret]) -> None:
    """Refuse to create a repository at an s3: location that holds objects (none of them restic's config)."""
    keys = stored_keys(name, url, env)
    if not keys:
        return
    count = f"{len(keys)}{' or more' if len(keys) == LIST_LIMIT else ''}"
    _, _, bucket, prefix = s3_location(url)
    where = f"under {prefix}/" if prefix else "in the bucket"
    # A restic repository one level down (its config object at FOLDER/config): the likely intended URL.
    nested = sorted({key.split("/")[0] for key in keys if key.count("/") == 1 and key.endswith("/config")})
    shown = ", ".join(keys[:3]) + (" …" if len(keys) > 3 else "")
    hint = (f"is the repository at {url.rstrip('/')}/{nested[0]}? fix the URL" if nested else
            "point the URL at a new or empty prefix (s3:…/BUCKET/PREFIX), or move those objects away")
    raise RepositoryError(f"repository {name}: {bucket} holds {count} object(s) {where} ({shown}) but no restic "
                          f"repository, so none is created there", hint)
