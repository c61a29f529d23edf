from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class LearnerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LearnerStatus(_message.Message):
    __slots__ = ("state", "learner_steps", "learner_steps_per_s", "loss", "mean_q", "published_version", "last_publish_ms", "publish_failures", "checkpoint_step", "last_checkpoint_unix", "resumed_from_step", "error", "transitions_sampled", "priorities_sent", "priorities_dropped", "active_actors", "warmup_s", "sample_wait_s", "update_s", "loop_s", "device", "publishes_refused", "publish_error", "update_warm_up_s")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    MEAN_Q_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_PUBLISH_MS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    LAST_CHECKPOINT_UNIX_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_SAMPLED_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_SENT_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ACTORS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WAIT_S_FIELD_NUMBER: _ClassVar[int]
    UPDATE_S_FIELD_NUMBER: _ClassVar[int]
    LOOP_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_WARM_UP_S_FIELD_NUMBER: _ClassVar[int]
    state: str
    learner_steps: int
    learner_steps_per_s: float
    loss: float
    mean_q: float
    published_version: int
    last_publish_ms: float
    publish_failures: int
    checkpoint_step: int
    last_checkpoint_unix: float
    resumed_from_step: int
    error: str
    transitions_sampled: int
    priorities_sent: int
    priorities_dropped: int
    active_actors: int
    warmup_s: float
    sample_wait_s: float
    update_s: float
    loop_s: float
    device: str
    publishes_refused: int
    publish_error: str
    update_warm_up_s: float
    def __init__(self, state: _Optional[str] = ..., learner_steps: _Optional[int] = ..., learner_steps_per_s: _Optional[float] = ..., loss: _Optional[float] = ..., mean_q: _Optional[float] = ..., published_version: _Optional[int] = ..., last_publish_ms: _Optional[float] = ..., publish_failures: _Optional[int] = ..., checkpoint_step: _Optional[int] = ..., last_checkpoint_unix: _Optional[float] = ..., resumed_from_step: _Optional[int] = ..., error: _Optional[str] = ..., transitions_sampled: _Optional[int] = ..., priorities_sent: _Optional[int] = ..., priorities_dropped: _Optional[int] = ..., active_actors: _Optional[int] = ..., warmup_s: _Optional[float] = ..., sample_wait_s: _Optional[float] = ..., update_s: _Optional[float] = ..., loop_s: _Optional[float] = ..., device: _Optional[str] = ..., publishes_refused: _Optional[int] = ..., publish_error: _Optional[str] = ..., update_warm_up_s: _Optional[float] = ...) -> None: ...
