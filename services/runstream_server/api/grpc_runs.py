"""The gRPC Runs service (runs.proto): run changes. Errors become status codes here, once."""

from __future__ import annotations

import grpc
from runstream.v1 import runs_pb2, runs_pb2_grpc

from ..common.errors import ConflictError, NotFoundError, PermanentError, RetryableError
from .mutations import Mutations


class RunsService(runs_pb2_grpc.RunsServicer):
    def __init__(self, mutations: Mutations) -> None:
        self._m = mutations

    async def _call(self, context, coro) -> runs_pb2.RunChange:
        try:
            return runs_pb2.RunChange(event=await coro)
        except NotFoundError as e:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except ConflictError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except PermanentError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except RetryableError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

    async def UpdateRun(self, request, context):
        return await self._call(context, self._m.update(
            request.entity, request.project, request.run_id, request.patch))

    async def DeleteRun(self, request, context):
        return await self._call(context, self._m.delete(
            request.entity, request.project, request.run_id))

    async def StopRun(self, request, context):
        return await self._call(context, self._m.stop(
            request.entity, request.project, request.run_id, request.requested_by))
