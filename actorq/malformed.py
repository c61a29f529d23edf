"""Requests that do not parse: INVALID_ARGUMENT and one warning line, not a traceback.

Left to itself, gRPC Python answers bytes that are not the method's request
message with INTERNAL and logs a full traceback at ERROR for every one: a
caller sending garbage fills the log. ``MalformedRequests`` parses each
request itself; one that does not parse ends the call with INVALID_ARGUMENT
naming the message type, logged as one line at warning (at most one per
``every_s``, counting the rest), and the servicer never sees it. A stream
whose later message is broken ends at that message, so nothing of it is
committed (the replay commits an Insert only after its commit marker).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from actorq.auth import RefusalLog

log = logging.getLogger(__name__)


class _Unparsed:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parser(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as err:  # DecodeError and whatever else a parser raises
            return _Unparsed(f"{type(err).__name__}: {err}")

    return parse


class MalformedRequests(grpc.ServerInterceptor):
    """Refuses requests that do not parse (see the module doc)."""

    def __init__(self) -> None:
        self._refusals = RefusalLog(log)

    def _refuse(self, context: grpc.ServicerContext, method: str, bad: _Unparsed) -> None:
        details = f"{method}: the request is not a valid message of its type ({bad.reason})"
        self._refusals.refused(f"refused a malformed request from {context.peer()}: {details}")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, details)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        parse = _parser(handler.request_deserializer)
        refuse = self._refuse

        def one(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(request: Any, context: grpc.ServicerContext, *rest: Any) -> Any:
                if isinstance(request, _Unparsed):
                    refuse(context, method, request)
                return behavior(request, context, *rest)

            _keep_flags(behavior, checked)
            return checked

        def many(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                def parsed() -> Iterator[Any]:
                    for request in requests:
                        if isinstance(request, _Unparsed):
                            refuse(context, method, request)
                        yield request

                return behavior(parsed(), context)

            return checked

        serializer = handler.response_serializer
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                many(handler.stream_stream), parse, serializer
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                many(handler.stream_unary), parse, serializer
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                one(handler.unary_stream), parse, serializer
            )
        return grpc.unary_unary_rpc_method_handler(one(handler.unary_unary), parse, serializer)


def _keep_flags(original: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
    """Carry grpc's experimental_non_blocking mark (health's Watch) over to a wrapper."""
    if getattr(original, "experimental_non_blocking", False):
        wrapper.experimental_non_blocking = True  # type: ignore[attr-defined]
