"""Joining an existing Ray cluster (`run --address`): its auth token, and a check that it answers.

Ray >= 2.52 can require a token on every control-plane call; `ray start --head` turns that on
whenever a token is configured on the head (Ray's default token file, RAY_AUTH_TOKEN or
RAY_AUTH_TOKEN_PATH). A driver that joins by address sends its token only when RAY_AUTH_MODE is
`token`, so without help a user's first `--address` run fails with twenty lines of
`InvalidAuthToken` and a traceback. `prepare_cluster` turns token mode on when a token is
configured and the user did not choose a mode, then asks the cluster's GCS for its id once:
an address where nothing answers, or a cluster that rejects the token, stops the run here with
one line, before anything is written. Authentication is never turned off or weakened.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from oracle.errors import OracleError

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# How long the GCS may take to answer the one check call (a loaded head answers in ms).
PROBE_TIMEOUT_S = 10.0

HOW_TO_PROVIDE = (
    "give this machine the head node's token: copy the output of `ray get-auth-token` "
    f"on the head into ~/.ray/auth_token here, or set {TOKEN_ENV} (or {TOKEN_PATH_ENV})"
)


def default_token_path() -> Path:
    """Ray's default token file (what `ray get-auth-token --generate` writes)."""
    return Path.home() / ".ray" / "auth_token"


def configured_token(env: MutableMapping[str, str]) -> str | None:
    """The token Ray would use, in Ray's order: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, the default file."""
    if env.get(TOKEN_ENV, "").strip():
        return env[TOKEN_ENV].strip()
    path = Path(env[TOKEN_PATH_ENV]).expanduser() if env.get(TOKEN_PATH_ENV) else default_token_path()
    try:
        token = path.read_text().strip()
    except OSError:
        if env.get(TOKEN_PATH_ENV):  # named explicitly: Ray aborts on it, so do we, clearly
            raise OracleError(f"{TOKEN_PATH_ENV}: cannot read the token file {path}") from None
        return None
    return token or None


def use_token_auth(env: MutableMapping[str, str]) -> bool:
    """Token mode for this driver when a token is configured and RAY_AUTH_MODE is unset.

    An explicit RAY_AUTH_MODE is the user's choice and is kept as it is. Returns whether the
    driver will send a token.
    """
    if env.get(AUTH_MODE_ENV):
        return env[AUTH_MODE_ENV].strip().lower() == "token"
    if configured_token(env) is None:
        return False
    env[AUTH_MODE_ENV] = "token"
    _refresh_ray_config()
    return True


def _refresh_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into a cached config; a process that already loaded Ray (a
    notebook, a test) must reload it, as Ray's own auto-enable does."""
    import sys

    if "ray._raylet" in sys.modules:
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled; Ray's _raylet.pyi omits it

        Config.initialize("")


def resolve_address(address: str) -> str:
    """HOST:PORT of the GCS that ray.init(address=...) will join (`auto`: RAY_ADDRESS, else
    the cluster `ray start` recorded on this machine), by Ray's own rule."""
    from ray._private.services import get_ray_address_from_environment

    try:
        resolved = get_ray_address_from_environment(address, None)
    except ConnectionError:
        raise OracleError(
            f"--address {address}: no Ray cluster found on this machine "
            "(start one with `ray start --head`, or pass --address HOST:PORT)"
        ) from None
    if resolved == "auto":  # Ray found none to name; ray.init would fail the same way
        raise OracleError(f"--address {address}: no Ray cluster found on this machine")
    return resolved


def prepare_cluster(address: str, env: MutableMapping[str, str] | None = None) -> None:
    """Before anything is written: token mode if configured, then one call to the GCS.

    Raises OracleError (one line) when nothing answers at the address or the cluster rejects
    this driver's token. A Ray Client address (ray://) is left to Ray.
    """
    env = os.environ if env is None else env
    token = configured_token(env) if use_token_auth(env) else None
    if env.get(AUTH_MODE_ENV, "").strip().lower() == "token" and token is None:
        raise OracleError(f"{AUTH_MODE_ENV}=token but no Ray auth token is configured: {HOW_TO_PROVIDE}")
    if address.startswith("ray://"):
        return
    target = resolve_address(address)
    _ask_cluster_id(address, target, token)


def _ask_cluster_id(address: str, target: str, token: str | None) -> None:
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    shown = address if address == target else f"{address} ({target})"
    metadata = [("authorization", f"Bearer {token}")] if token else []
    channel = grpc.insecure_channel(target)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]  # protobuf, no stubs
        stub.GetClusterId(request, timeout=PROBE_TIMEOUT_S, metadata=metadata)
    except grpc.RpcError as exc:
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            said = ("rejected this machine's Ray auth token" if token
                    else "requires a Ray auth token and none is configured here")
            raise OracleError(f"--address {shown}: the cluster {said}; {HOW_TO_PROVIDE}") from None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise OracleError(
                f"--address {shown}: no Ray cluster answers there within {PROBE_TIMEOUT_S:.0f}s "
                "(is the head node up, `ray start --head`, and is its GCS port reachable from here?)"
            ) from None
        raise OracleError(f"--address {shown}: the cluster did not answer as a Ray GCS ({code.name})") from None
    finally:
        channel.close()
