"""Relay's V2 (Open Inference Protocol) server: MLServer, started from Relay's own entry point so that every
request needs the token, over REST and gRPC. It runs in ``.venv-serve`` (MLServer's pins clash with Airflow's):

    .venv-serve/bin/python -m components.deploy.v2_server REPOSITORY --token-file FILE

REPOSITORY is an MLServer model repository: its ``settings.json`` (host, ports) and one folder per model
version holding ``model-settings.json`` (implementation ``components.deploy.v2_runtime.RelayImageClassifier``),
the ONNX model and Relay's serving config. ``defaults.json`` there, ``{model: version}``, names each model's
default version: requests that name no version (``/v2/models/<name>/infer``, ``/predictions/<name>``, a gRPC
ModelInfer with no ``model_version``) go to it.

MLServer has no authentication of its own. The token is checked by an ASGI middleware in front of MLServer's
REST app and by a gRPC interceptor (which also sends versionless calls to the default), both added here; the
token file is read again whenever it changes, so a renewed token takes effect without a restart. Behind the
token, TorchServe's raw image route (``v2_runtime.RAW_ROUTE``) is a plain Starlette route ahead of MLServer's
FastAPI app: as a MLServer custom handler it went through FastAPI's request handling and MLServer's GZip
middleware, which cost more than the model (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import re
from pathlib import Path

import grpc
from grpc import aio
from mlserver import MLServer
from mlserver.cli.serve import load_settings
from mlserver.grpc import GRPCServer
from mlserver.utils import install_uvloop_event_loop
from starlette.routing import Route, Router

from components.deploy.v2_runtime import RAW_ROUTE, answer_image

DEFAULTS_FILE = "defaults.json"  # package.V2_DEFAULTS_FILE (package's imports are not in this environment)
_VERSIONLESS = (re.compile(r"^/v2/models/([^/]+)/(infer|ready)$"), re.compile(r"^/predictions/([^/]+)$"))


class _Watched:
    """A small file's parsed content, read again when its mtime or size changes."""

    def __init__(self, path: Path, parse, empty):
        self.path, self.parse, self.empty, self._stamp, self._value = path, parse, empty, None, empty

    def value(self):
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self.empty
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            self._value, self._stamp = self.parse(self.path.read_text()), (stat.st_mtime_ns, stat.st_size)
        return self._value


class Token:
    def __init__(self, token_file: Path):
        self._file = _Watched(token_file, str.strip, "")

    def accepts(self, authorization: str | bytes | None) -> bool:
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        expected = self._file.value()
        return bool(expected) and hmac.compare_digest(authorization or "", f"Bearer {expected}")


class TokenAndDefaults:
    """ASGI middleware: 401 for a request without ``Authorization: Bearer <token>``; a versionless model path
    rewritten to the model's default version."""

    def __init__(self, app, token: Token, defaults: _Watched):
        self.app, self.token, self.defaults = app, token, defaults

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        authorization = dict(scope["headers"]).get(b"authorization")
        if not self.token.accepts(authorization):
            return await _json(send, 401, {"code": 401, "type": "Unauthorized", "error": _NO_TOKEN,
                                           "message": _NO_TOKEN})
        path = scope["path"]
        for pattern in _VERSIONLESS:
            if match := pattern.match(path):
                name = match.group(1)
                version = self.defaults.value().get(name)
                if version is None:
                    message = _no_default_version(name)
                    return await _json(send, 404, {"code": 404, "type": "ModelNotFound", "error": message,
                                                   "message": message})
                path = (f"/v2/models/{name}/versions/{version}/{match.group(2)}" if path.startswith("/v2/")
                        else f"/predictions/{name}/{version}")
                scope = {**scope, "path": path, "raw_path": path.encode()}
                break
        return await self.app(scope, receive, send)


class RawImageRoute:
    """ASGI middleware: TorchServe's raw image route answered by ``v2_runtime.answer_image``; every other path
    goes on to ``app``, MLServer's."""

    def __init__(self, app):
        self.router = Router(routes=[Route(RAW_ROUTE, answer_image, methods=["POST", "PUT"])], default=app)

    async def __call__(self, scope, receive, send):
        await self.router(scope, receive, send)


_NO_TOKEN = "a token is required: send 'Authorization: Bearer <token>' (relay serve status names the token file)"


def _no_default_version(name: str) -> str:
    return f"model {name} has no default version on this server"


async def _json(send, status: int, body: dict) -> None:
    content = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


# The gRPC calls that name a model version, and their request's (model, version) fields: the same calls as
# _VERSIONLESS on REST. A call that leaves the version empty goes to Relay's default, as on REST (MLServer's own
# choice would be the newest version, which is wrong after a rollback).
_VERSIONED_RPCS = {"/inference.GRPCInferenceService/ModelInfer": ("model_name", "model_version"),
                   "/inference.GRPCInferenceService/ModelReady": ("name", "version")}


class TokenAndDefaultsInterceptor(aio.ServerInterceptor):
    """gRPC: UNAUTHENTICATED for a call without ``authorization: Bearer <token>`` metadata; a call naming no
    version goes to the model's default version (NOT_FOUND when it has none)."""

    def __init__(self, token: Token, defaults: _Watched):
        self.token, self.defaults = token, defaults

        async def refuse(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, _NO_TOKEN)

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        if not self.token.accepts(metadata.get("authorization")):
            return self._refusal
        handler = await continuation(handler_call_details)
        fields = _VERSIONED_RPCS.get(handler_call_details.method)
        if handler is None or fields is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(self._to_default(handler.unary_unary, *fields),
                                                   request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def _to_default(self, behaviour, name_field: str, version_field: str):
        async def to_default(request, context):
            if not getattr(request, version_field):
                name = getattr(request, name_field)
                version = self.defaults.value().get(name)
                if version is None:
                    await context.abort(grpc.StatusCode.NOT_FOUND, _no_default_version(name))
                setattr(request, version_field, version)
            return await behaviour(request, context)

        return to_default


class RelayMLServer(MLServer):
    """MLServer with the token and Relay's default versions on both protocols."""

    def __init__(self, settings, repository: Path, token_file: Path):
        self._token = Token(token_file)
        self._defaults = _Watched(repository / DEFAULTS_FILE, json.loads, {})
        super().__init__(settings)

    def _create_servers(self) -> None:
        super()._create_servers()
        # add_middleware puts each one outside those added before: the token is checked first.
        self._rest_server._app.add_middleware(RawImageRoute)
        self._rest_server._app.add_middleware(TokenAndDefaults, token=self._token, defaults=self._defaults)
        interceptor = TokenAndDefaultsInterceptor(self._token, self._defaults)

        class TokenGRPCServer(GRPCServer):
            def _create_server(self):
                # MLServer 1.7 builds its interceptor list inside _create_server, with no hook to add one.
                original = aio.server

                def with_token(*args, interceptors=(), **kwargs):
                    return original(*args, interceptors=[interceptor, *interceptors], **kwargs)

                aio.server = with_token
                try:
                    return super()._create_server()
                finally:
                    aio.server = original

        self._grpc_server = TokenGRPCServer(self._settings, self._data_plane, self._model_repository_handlers)


async def _serve(repository: Path, token_file: Path) -> None:
    settings, models = await load_settings(str(repository))
    if settings.host not in ("127.0.0.1", "::1", "localhost") and not os.environ.get("RELAY_V2_ANY_HOST"):
        raise SystemExit(f"{repository / 'settings.json'}: host {settings.host} is not loopback; Relay's V2 "
                         "server listens on 127.0.0.1 (in a pod, set RELAY_V2_ANY_HOST=1)")
    if settings.parallel_workers:
        raise SystemExit(f"{repository / 'settings.json'}: parallel_workers must be 0: the raw image route answers "
                         "from the models this process loaded")
    await RelayMLServer(settings, repository, token_file).start(models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args()
    install_uvloop_event_loop()  # as `mlserver start` does: uvloop's event loop, not asyncio's
    asyncio.run(_serve(args.repository, args.token_file))


if __name__ == "__main__":
    main()
