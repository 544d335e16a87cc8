"""AWS error codes in the backend's vocabulary (:class:`~scaler.backends.base.Failure`).

EC2, Auto Scaling and S3 each name their refusals; the agent acts on what kind
of refusal it is (capacity: try elsewhere; throttled: back off ...). Messages
carry AWS's code and message, never request values.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from scaler.backends.base import BackendError, Failure

_CAPACITY = {
    "InsufficientInstanceCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "InsufficientCapacityOnHost",
    "InsufficientFreeAddressesInSubnet",
    "SpotMaxPriceTooLow",
    "Unsupported",  # the instance type is not offered in this AZ
    "UnfulfillableCapacity",
}
_QUOTA = {
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "MaxSpotInstanceCountExceeded",
    "LimitExceeded",
    "AddressLimitExceeded",
    "VolumeLimitExceeded",
}
_THROTTLED = {
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "SlowDown",
    "TooManyRequestsException",
    "RequestThrottled",
}
_UNAVAILABLE = {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable", "ServerInternal"}
_CONFLICT = {"IdempotentParameterMismatch", "ResourceContention", "ScalingActivityInProgress", "IncorrectState"}


def failure_for(code: str, status: int = 400) -> Failure:
    """An EC2/Auto Scaling/S3 error code in the backend vocabulary."""
    code = code.removeprefix("Server.").removeprefix("Client.")
    if code in _CAPACITY:
        return Failure.CAPACITY
    if code in _QUOTA:
        return Failure.QUOTA
    if code in _THROTTLED:
        return Failure.THROTTLED
    if code in _UNAVAILABLE or status >= 500:
        return Failure.UNAVAILABLE
    if code in _CONFLICT:
        return Failure.CONFLICT
    if code.endswith(("NotFound", ".NotFound", "NoSuchKey")) or code in ("NoSuchBucket", "NotFound"):
        return Failure.NOT_FOUND
    return Failure.INVALID


def error_parts(exc: ClientError) -> tuple[str, str, int]:
    """(code, message, HTTP status) of a botocore ClientError."""
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400) or 400)
    return str(error.get("Code", "")), str(error.get("Message", "")), status


def backend_error(exc: Exception, action: str) -> BackendError:
    """A botocore exception as a :class:`BackendError` (the message never echoes request values)."""
    if isinstance(exc, ClientError):
        code, message, status = error_parts(exc)
        return BackendError(f"AWS {action}: {code}: {message[:300]}", reason=failure_for(code, status))
    return BackendError(f"AWS {action}: {type(exc).__name__}", reason=Failure.UNAVAILABLE)


__all__ = ["backend_error", "error_parts", "failure_for"]
