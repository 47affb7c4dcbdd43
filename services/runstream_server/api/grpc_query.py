"""The gRPC Query service. Errors are translated to status codes here, once."""

from __future__ import annotations

import grpc
from runstream.v1 import query_pb2, query_pb2_grpc

from ..common import status
from ..common.status import TRANSLATED
from . import convert
from .queries import Queries
from .store_access import StoreAccess


class QueryService(query_pb2_grpc.QueryServicer):
    def __init__(self, store: StoreAccess, queries: Queries) -> None:
        self._store = store
        self._q = queries

    async def _call(self, context, fn, *args):
        try:
            return await self._store.call(fn, *args)
        except TRANSLATED as e:
            await status.abort(context, e)

    async def ListProjects(self, request, context):
        rows = await self._call(context, self._q.list_projects, request.entity or None)
        return query_pb2.ListProjectsResponse(
            projects=[query_pb2.ProjectView(**r) for r in rows])

    async def ListRuns(self, request, context):
        f = request.filter
        flt = {"states": list(f.states), "tags": list(f.tags), "name_contains": f.name_contains,
               "config": [(c.key, c.json) for c in f.config]}
        rows, total = await self._call(
            context, self._q.list_runs, request.entity, request.project, flt,
            request.sort_by or "created_at", request.descending, request.limit, request.offset)
        return query_pb2.ListRunsResponse(runs=[convert.run_view(r) for r in rows], total=total)

    async def GetRun(self, request, context):
        row = await self._call(context, self._q.get_run, request.entity, request.project,
                               request.run_id)
        return convert.run_view(row)

    async def GetHistory(self, request, context):
        if request.page_points:
            if request.buckets:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "page_points pages raw points: buckets must be 0")
            rows, more, nxt = await self._call(
                context, self._q.history_page, request.entity, request.project,
                request.run_id, list(request.keys), request.min_step, request.max_step,
                request.page_points)
            return query_pb2.GetHistoryResponse(series=[convert.series(r) for r in rows],
                                                has_more=more, next_min_step=nxt)
        rows = await self._call(context, self._q.get_history, request.entity, request.project,
                                request.run_id, list(request.keys), request.buckets,
                                request.min_step, request.max_step)
        return query_pb2.GetHistoryResponse(series=[convert.series(r) for r in rows])
