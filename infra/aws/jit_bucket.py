"""The department's JIT bucket: where the agent leaves each VM's single-use runner config.

One object per instance, ``jit/<runner role id>:<instance id>`` (the runner
role's ``aws:userid`` on that instance, so a runner can read and delete its own
key and no other). Private (all public access blocked, owner-enforced, TLS
only), encrypted, unversioned (a deleted config is gone), and a lifecycle rule
expires whatever was never read: a VM that never booted leaves nothing behind
for longer than a day. S3 takes thousands of writes a second per prefix, far
above GitHub's ~180 JIT configs a minute per App (SSM's PutParameter allows 3-10 a
second, shared by the whole account, and 4 KB without the paid tier).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.permissions import JIT_PREFIX, jit_bucket_name, jit_bucket_policy

EXPIRE_AFTER_DAYS = 1


@dataclass(frozen=True)
class JitBucketArgs:
    department: str
    region: str
    account: pulumi.Input[str]
    tags: Mapping[str, str]


class JitBucket(pulumi.ComponentResource):
    bucket: aws.s3.Bucket
    outputs: dict[str, Any]

    def __init__(self, name: str, args: JitBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("garo:aws:JitBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket_name = pulumi.Output.from_input(args.account).apply(
            lambda a: jit_bucket_name(args.department, a, args.region)
        )
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket", bucket=bucket_name, force_destroy=True, tags=dict(args.tags), opts=child
        )
        aws.s3.BucketPublicAccessBlock(
            f"{name}-no-public-access",
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=self.bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-expire-unread",
            bucket=self.bucket.id,
            rules=[
                {
                    "id": "expire-unread-jit-configs",
                    "status": "Enabled",
                    "filter": {"prefix": JIT_PREFIX},
                    "expiration": {"days": EXPIRE_AFTER_DAYS},
                }
            ],
            opts=child,
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only", bucket=self.bucket.id, policy=bucket_name.apply(jit_bucket_policy), opts=child
        )
        self.name = bucket_name
        self.outputs = {"bucket": bucket_name}
        self.register_outputs(self.outputs)
