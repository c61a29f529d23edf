"""Per-method concurrency limits, so long calls never take the threads health needs.

A gRPC Python server runs every call on one thread pool, and a call holds its
thread for as long as it lasts: a GetModel long poll for its wait, an Insert
stream until the client closes it, a Sample stream until cancelled, a
reflection stream for ever. With one shared pool, enough idle long calls
leave none for a health check and the orchestrator restarts a healthy
service. So each long-lived method gets its own budget of concurrent calls
(``CallLimits``), and the pool is sized as those budgets plus a reserve for
everything else (health, status, stats, priority updates): the long calls
can never hold more than their budgets, and the reserve is always there.

A call over its method's budget is refused at once with RESOURCE_EXHAUSTED
and the trailing metadata ``actorq-busy: 1`` (``actorq.retry.is_busy``), so
a client can tell "busy, back off and retry" from "too big, never retry".
The count is taken and given back on the handler's own thread, around the
servicer, so a call that never reaches the servicer (a request that fails
to parse) never holds a slot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc

from actorq.retry import BUSY_METADATA

# Reflection streams are opened by grpcurl and debuggers, a few at a time.
REFLECTION_STREAMS = 2
REFLECTION_PREFIX = "/grpc.reflection."


class _Budget:
    """Concurrent calls of one method: taken up to limit, then refused."""

    def __init__(self, method: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"{method}: a concurrency limit must be at least 1, got {limit}")
        self.method, self.limit = method, limit
        self.in_use = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.in_use >= self.limit:
                return False
            self.in_use += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.in_use -= 1

    def refuse(self, context: grpc.ServicerContext) -> None:
        context.set_trailing_metadata((BUSY_METADATA,))
        context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{self.method}: all {self.limit} concurrent calls this server allows are in "
            "use; back off and retry",
        )


def _limited_unary_response(behavior: Callable[..., Any], budget: _Budget) -> Callable[..., Any]:
    def limited(request: Any, context: grpc.ServicerContext) -> Any:
        if not budget.take():
            budget.refuse(context)
        try:
            return behavior(request, context)
        finally:
            budget.give_back()

    return limited


def _limited_stream_response(behavior: Callable[..., Any], budget: _Budget) -> Callable[..., Any]:
    def limited(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        # grpc iterates the responses on this same thread: the slot is held until the
        # stream ends, fails or is dropped (cancelled: the generator is closed).
        if not budget.take():
            budget.refuse(context)
        try:
            yield from behavior(request, context)
        finally:
            budget.give_back()

    return limited


def _limited(handler: grpc.RpcMethodHandler, budget: _Budget) -> grpc.RpcMethodHandler:
    """handler with its servicer call counted against budget."""
    args = (handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        if handler.request_streaming:
            behavior = _limited_stream_response(handler.stream_stream, budget)
            return grpc.stream_stream_rpc_method_handler(behavior, *args)
        behavior = _limited_stream_response(handler.unary_stream, budget)
        return grpc.unary_stream_rpc_method_handler(behavior, *args)
    if handler.request_streaming:
        behavior = _limited_unary_response(handler.stream_unary, budget)
        return grpc.stream_unary_rpc_method_handler(behavior, *args)
    behavior = _limited_unary_response(handler.unary_unary, budget)
    return grpc.unary_unary_rpc_method_handler(behavior, *args)


class CallLimits(grpc.ServerInterceptor):
    """At most ``limits[method]`` concurrent calls of each named method (full names,
    ``/package.Service/Method``); reflection streams at most REFLECTION_STREAMS."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self._budgets = {method: _Budget(method, n) for method, n in limits.items()}
        self._reflection = _Budget("server reflection", REFLECTION_STREAMS)

    @property
    def threads(self) -> int:
        """Threads the limited calls can hold at most, together."""
        return sum(b.limit for b in self._budgets.values()) + self._reflection.limit

    def in_use(self, method: str) -> int:
        """Calls of method running now (for tests and status)."""
        return self._budgets[method].in_use

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        budget = self._budgets.get(method)
        if budget is None and method.startswith(REFLECTION_PREFIX):
            budget = self._reflection
        if handler is None or budget is None:
            return handler
        # Health's Watch is non-blocking (no thread held); everything else that is
        # not limited is short and shares the reserve.
        if getattr(handler.unary_stream, "experimental_non_blocking", False):
            return handler
        return _limited(handler, budget)
