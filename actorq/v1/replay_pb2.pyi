from actorq.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransitionChunk(_message.Message):
    __slots__ = ("obs", "action", "reward", "discount", "next_obs", "actor_id", "policy_version", "sequence", "session", "commit")
    OBS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    DISCOUNT_FIELD_NUMBER: _ClassVar[int]
    NEXT_OBS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    obs: _common_pb2.Tensor
    action: _common_pb2.Tensor
    reward: _common_pb2.Tensor
    discount: _common_pb2.Tensor
    next_obs: _common_pb2.Tensor
    actor_id: str
    policy_version: int
    sequence: int
    session: int
    commit: bool
    def __init__(self, obs: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., action: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., reward: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., discount: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., next_obs: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., actor_id: _Optional[str] = ..., policy_version: _Optional[int] = ..., sequence: _Optional[int] = ..., session: _Optional[int] = ..., commit: _Optional[bool] = ...) -> None: ...

class InsertResponse(_message.Message):
    __slots__ = ("chunks", "transitions", "size", "duplicates")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    transitions: int
    size: int
    duplicates: int
    def __init__(self, chunks: _Optional[int] = ..., transitions: _Optional[int] = ..., size: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("batch_size", "num_batches", "batches_per_message")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_PER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    num_batches: int
    batches_per_message: int
    def __init__(self, batch_size: _Optional[int] = ..., num_batches: _Optional[int] = ..., batches_per_message: _Optional[int] = ...) -> None: ...

class SampleBatch(_message.Message):
    __slots__ = ("transitions", "keys", "weights", "batch_count")
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    transitions: TransitionChunk
    keys: _common_pb2.Tensor
    weights: _common_pb2.Tensor
    batch_count: int
    def __init__(self, transitions: _Optional[_Union[TransitionChunk, _Mapping]] = ..., keys: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., weights: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., batch_count: _Optional[int] = ...) -> None: ...

class UpdatePrioritiesRequest(_message.Message):
    __slots__ = ("keys", "priorities")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    keys: _common_pb2.Tensor
    priorities: _common_pb2.Tensor
    def __init__(self, keys: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., priorities: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class UpdatePrioritiesResponse(_message.Message):
    __slots__ = ("updated",)
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    updated: int
    def __init__(self, updated: _Optional[int] = ...) -> None: ...

class ReplayStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplayStats(_message.Message):
    __slots__ = ("size", "capacity", "inserted", "sampled", "evicted", "insert_calls", "sample_batches", "samples_per_insert", "min_size_to_sample", "error_buffer", "observed_samples_per_insert", "insert_blocked_s", "sample_blocked_s", "inserted_by_actor", "actor_last_seen_unix", "store", "rejected_calls")
    class InsertedByActorEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ActorLastSeenUnixEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    INSERT_CALLS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_INSERT_FIELD_NUMBER: _ClassVar[int]
    MIN_SIZE_TO_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_BUFFER_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_SAMPLES_PER_INSERT_FIELD_NUMBER: _ClassVar[int]
    INSERT_BLOCKED_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_BLOCKED_S_FIELD_NUMBER: _ClassVar[int]
    INSERTED_BY_ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_CALLS_FIELD_NUMBER: _ClassVar[int]
    size: int
    capacity: int
    inserted: int
    sampled: int
    evicted: int
    insert_calls: int
    sample_batches: int
    samples_per_insert: float
    min_size_to_sample: int
    error_buffer: float
    observed_samples_per_insert: float
    insert_blocked_s: float
    sample_blocked_s: float
    inserted_by_actor: _containers.ScalarMap[str, int]
    actor_last_seen_unix: _containers.ScalarMap[str, float]
    store: str
    rejected_calls: int
    def __init__(self, size: _Optional[int] = ..., capacity: _Optional[int] = ..., inserted: _Optional[int] = ..., sampled: _Optional[int] = ..., evicted: _Optional[int] = ..., insert_calls: _Optional[int] = ..., sample_batches: _Optional[int] = ..., samples_per_insert: _Optional[float] = ..., min_size_to_sample: _Optional[int] = ..., error_buffer: _Optional[float] = ..., observed_samples_per_insert: _Optional[float] = ..., insert_blocked_s: _Optional[float] = ..., sample_blocked_s: _Optional[float] = ..., inserted_by_actor: _Optional[_Mapping[str, int]] = ..., actor_last_seen_unix: _Optional[_Mapping[str, float]] = ..., store: _Optional[str] = ..., rejected_calls: _Optional[int] = ...) -> None: ...
