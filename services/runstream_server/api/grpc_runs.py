"""The gRPC Runs service (runs.proto): run changes, by members of the run's entity only
(``api/authz.py``). Errors become status codes here, once."""

from __future__ import annotations

from runstream.v1 import runs_pb2, runs_pb2_grpc

from ..auth.identity import IdentityTable
from ..common import status
from ..common.status import TRANSLATED
from .grpc_query import principal_of
from .mutations import Mutations


class RunsService(runs_pb2_grpc.RunsServicer):
    def __init__(self, mutations: Mutations, identity: IdentityTable) -> None:
        self._m = mutations
        self._identity = identity

    async def _call(self, context, method, *args) -> runs_pb2.RunChange:
        p = await principal_of(context, self._identity)
        try:
            return runs_pb2.RunChange(event=await method(p, *args))
        except TRANSLATED as e:
            await status.abort(context, e)

    async def UpdateRun(self, request, context):
        return await self._call(context, self._m.update, request.entity, request.project,
                                request.run_id, request.patch)

    async def DeleteRun(self, request, context):
        return await self._call(context, self._m.delete, request.entity, request.project,
                                request.run_id)

    async def StopRun(self, request, context):
        return await self._call(context, self._m.stop, request.entity, request.project,
                                request.run_id, request.requested_by)
