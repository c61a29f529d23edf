from actorq.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WeightsHeader(_message.Message):
    __slots__ = ("policy_version", "learner_step", "network", "precisions", "calibration_obs")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEP_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PRECISIONS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_OBS_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    learner_step: int
    network: _common_pb2.NetworkSpec
    precisions: _containers.RepeatedScalarFieldContainer[str]
    calibration_obs: _common_pb2.Tensor
    def __init__(self, policy_version: _Optional[int] = ..., learner_step: _Optional[int] = ..., network: _Optional[_Union[_common_pb2.NetworkSpec, _Mapping]] = ..., precisions: _Optional[_Iterable[str]] = ..., calibration_obs: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class TensorPart(_message.Message):
    __slots__ = ("tensor", "offset")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    tensor: _common_pb2.Tensor
    offset: int
    def __init__(self, tensor: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...

class WeightsUpload(_message.Message):
    __slots__ = ("header", "tensor")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    header: WeightsHeader
    tensor: TensorPart
    def __init__(self, header: _Optional[_Union[WeightsHeader, _Mapping]] = ..., tensor: _Optional[_Union[TensorPart, _Mapping]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("policy_version", "artifacts")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelArtifact]
    def __init__(self, policy_version: _Optional[int] = ..., artifacts: _Optional[_Iterable[_Union[_common_pb2.ModelArtifact, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("precision", "newer_than", "wait_s")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    NEWER_THAN_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    precision: str
    newer_than: int
    wait_s: float
    def __init__(self, precision: _Optional[str] = ..., newer_than: _Optional[int] = ..., wait_s: _Optional[float] = ...) -> None: ...

class ModelPart(_message.Message):
    __slots__ = ("artifact", "data", "not_modified")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NOT_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.ModelArtifact
    data: bytes
    not_modified: bool
    def __init__(self, artifact: _Optional[_Union[_common_pb2.ModelArtifact, _Mapping]] = ..., data: _Optional[bytes] = ..., not_modified: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("artifacts", "versions_built", "rejected_uploads")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_BUILT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_UPLOADS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelArtifact]
    versions_built: int
    rejected_uploads: int
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.ModelArtifact, _Mapping]]] = ..., versions_built: _Optional[int] = ..., rejected_uploads: _Optional[int] = ...) -> None: ...
