from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActorStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StepBreakdown(_message.Message):
    __slots__ = ("env_us", "inference_us", "send_us", "other_us")
    ENV_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    SEND_US_FIELD_NUMBER: _ClassVar[int]
    OTHER_US_FIELD_NUMBER: _ClassVar[int]
    env_us: float
    inference_us: float
    send_us: float
    other_us: float
    def __init__(self, env_us: _Optional[float] = ..., inference_us: _Optional[float] = ..., send_us: _Optional[float] = ..., other_us: _Optional[float] = ...) -> None: ...

class SwapTimes(_message.Message):
    __slots__ = ("swaps", "pull_ms", "load_ms", "last_pull_ms", "last_load_ms")
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    PULL_MS_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_PULL_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    swaps: int
    pull_ms: float
    load_ms: float
    last_pull_ms: float
    last_load_ms: float
    def __init__(self, swaps: _Optional[int] = ..., pull_ms: _Optional[float] = ..., load_ms: _Optional[float] = ..., last_pull_ms: _Optional[float] = ..., last_load_ms: _Optional[float] = ...) -> None: ...

class ActorStatus(_message.Message):
    __slots__ = ("actor_id", "precision", "env", "state", "env_steps", "episodes", "env_steps_per_s", "model_version", "model_bytes", "epsilon", "mean_episode_return", "breakdown", "swap", "transitions_sent", "send_failures", "pending_chunks", "error", "send_rpc_s")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_BYTES_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    MEAN_EPISODE_RETURN_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    SWAP_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_SENT_FIELD_NUMBER: _ClassVar[int]
    SEND_FAILURES_FIELD_NUMBER: _ClassVar[int]
    PENDING_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SEND_RPC_S_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    precision: str
    env: str
    state: str
    env_steps: int
    episodes: int
    env_steps_per_s: float
    model_version: int
    model_bytes: int
    epsilon: float
    mean_episode_return: float
    breakdown: StepBreakdown
    swap: SwapTimes
    transitions_sent: int
    send_failures: int
    pending_chunks: int
    error: str
    send_rpc_s: float
    def __init__(self, actor_id: _Optional[str] = ..., precision: _Optional[str] = ..., env: _Optional[str] = ..., state: _Optional[str] = ..., env_steps: _Optional[int] = ..., episodes: _Optional[int] = ..., env_steps_per_s: _Optional[float] = ..., model_version: _Optional[int] = ..., model_bytes: _Optional[int] = ..., epsilon: _Optional[float] = ..., mean_episode_return: _Optional[float] = ..., breakdown: _Optional[_Union[StepBreakdown, _Mapping]] = ..., swap: _Optional[_Union[SwapTimes, _Mapping]] = ..., transitions_sent: _Optional[int] = ..., send_failures: _Optional[int] = ..., pending_chunks: _Optional[int] = ..., error: _Optional[str] = ..., send_rpc_s: _Optional[float] = ...) -> None: ...
