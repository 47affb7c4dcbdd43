"""The gRPC Query service. Every call is authenticated (``auth/access.py``) and reads
only what its caller may see (``api/authz.py``). Errors become status codes here, once."""

from __future__ import annotations

import grpc
from runstream.v1 import query_pb2, query_pb2_grpc

from ..auth.access import authenticate, key_from_metadata
from ..auth.identity import IdentityTable, Principal
from ..common import status
from ..common.status import TRANSLATED
from . import authz, convert
from .queries import Queries
from .store_access import StoreAccess


async def principal_of(context, identity: IdentityTable) -> Principal:
    """The caller of a gRPC call, or the call ends with UNAUTHENTICATED."""
    try:
        return authenticate(identity, key_from_metadata(context.invocation_metadata()))
    except TRANSLATED as e:
        await status.abort(context, e)


class QueryService(query_pb2_grpc.QueryServicer):
    def __init__(self, store: StoreAccess, queries: Queries, identity: IdentityTable) -> None:
        self._store = store
        self._q = queries
        self._identity = identity

    async def _call(self, context, fn, *args):
        try:
            return await self._store.call(fn, *args)
        except TRANSLATED as e:
            await status.abort(context, e)

    async def ListProjects(self, request, context):
        p = await principal_of(context, self._identity)
        rows = await self._call(context, self._q.list_projects, request.entity or None, "",
                                authz.members_of(p))
        return query_pb2.ListProjectsResponse(
            projects=[query_pb2.ProjectView(**r) for r in rows])

    def _list_runs(self, p, request):
        f = request.filter
        public_only = authz.project_public_only(self._q, p, request.entity, request.project)
        flt = {"states": list(f.states), "tags": list(f.tags), "name_contains": f.name_contains,
               "config": [(c.key, c.json) for c in f.config], "public_only": public_only}
        return self._q.list_runs(request.entity, request.project, flt,
                                 request.sort_by or "created_at", request.descending,
                                 request.limit, request.offset)

    async def ListRuns(self, request, context):
        p = await principal_of(context, self._identity)
        rows, total = await self._call(context, self._list_runs, p, request)
        return query_pb2.ListRunsResponse(runs=[convert.run_view(r) for r in rows], total=total)

    async def GetRun(self, request, context):
        p = await principal_of(context, self._identity)
        row = await self._call(context, authz.visible_run, self._q, p, request.entity,
                               request.project, request.run_id)
        return convert.run_view(row)

    def _history(self, p, request):
        authz.visible_run(self._q, p, request.entity, request.project, request.run_id)
        if request.page_points:
            return self._q.history_page(
                request.entity, request.project, request.run_id, list(request.keys),
                request.min_step, request.max_step, request.page_points)
        return self._q.get_history(request.entity, request.project, request.run_id,
                                   list(request.keys), request.buckets,
                                   request.min_step, request.max_step)

    async def GetHistory(self, request, context):
        p = await principal_of(context, self._identity)
        if request.page_points and request.buckets:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "page_points pages raw points: buckets must be 0")
        out = await self._call(context, self._history, p, request)
        if request.page_points:
            rows, more, nxt = out
            return query_pb2.GetHistoryResponse(series=[convert.series(r) for r in rows],
                                                has_more=more, next_min_step=nxt)
        return query_pb2.GetHistoryResponse(series=[convert.series(r) for r in out])
