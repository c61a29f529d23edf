from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    INT32: _ClassVar[DType]
    INT64: _ClassVar[DType]
    UINT8: _ClassVar[DType]
    INT8: _ClassVar[DType]
    BOOL: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
DTYPE_UNSPECIFIED: DType
FLOAT32: DType
FLOAT64: DType
INT32: DType
INT64: DType
UINT8: DType
INT8: DType
BOOL: DType
FLOAT16: DType

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class NetworkSpec(_message.Message):
    __slots__ = ("kind", "obs_dim", "hidden_sizes", "output_dim", "activation", "action_low", "action_high", "layer_norm")
    KIND_FIELD_NUMBER: _ClassVar[int]
    OBS_DIM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    ACTION_LOW_FIELD_NUMBER: _ClassVar[int]
    ACTION_HIGH_FIELD_NUMBER: _ClassVar[int]
    LAYER_NORM_FIELD_NUMBER: _ClassVar[int]
    kind: str
    obs_dim: int
    hidden_sizes: _containers.RepeatedScalarFieldContainer[int]
    output_dim: int
    activation: str
    action_low: _containers.RepeatedScalarFieldContainer[float]
    action_high: _containers.RepeatedScalarFieldContainer[float]
    layer_norm: bool
    def __init__(self, kind: _Optional[str] = ..., obs_dim: _Optional[int] = ..., hidden_sizes: _Optional[_Iterable[int]] = ..., output_dim: _Optional[int] = ..., activation: _Optional[str] = ..., action_low: _Optional[_Iterable[float]] = ..., action_high: _Optional[_Iterable[float]] = ..., layer_norm: _Optional[bool] = ...) -> None: ...

class QuantizationReport(_message.Message):
    __slots__ = ("method", "max_abs_err", "action_agreement", "calibration_samples", "calibration_source")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERR_FIELD_NUMBER: _ClassVar[int]
    ACTION_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    method: str
    max_abs_err: float
    action_agreement: float
    calibration_samples: int
    calibration_source: str
    def __init__(self, method: _Optional[str] = ..., max_abs_err: _Optional[float] = ..., action_agreement: _Optional[float] = ..., calibration_samples: _Optional[int] = ..., calibration_source: _Optional[str] = ...) -> None: ...

class ModelArtifact(_message.Message):
    __slots__ = ("version", "precision", "sha256", "size_bytes", "network", "quantization", "build_ms", "learner_step", "created_unix")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    BUILD_MS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_STEP_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    version: int
    precision: str
    sha256: str
    size_bytes: int
    network: NetworkSpec
    quantization: QuantizationReport
    build_ms: float
    learner_step: int
    created_unix: float
    def __init__(self, version: _Optional[int] = ..., precision: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., network: _Optional[_Union[NetworkSpec, _Mapping]] = ..., quantization: _Optional[_Union[QuantizationReport, _Mapping]] = ..., build_ms: _Optional[float] = ..., learner_step: _Optional[int] = ..., created_unix: _Optional[float] = ...) -> None: ...
