"""ActorQ: a full-precision learner, int8-quantized actors, gRPC in between.

This package is the shared floor every service stands on: the generated
protobuf messages (``actorq.v1``), the tensor codec, gRPC server/channel
helpers, typed configuration, and the ``actorq`` command line. The services
themselves live in ``services/{replay,quantizer,learner,actor}``.
"""

import os

# ActorQ never uses a gRPC channel across fork(); with gRPC's fork support on,
# its fork handlers can abort a child between fork and exec. Set before any
# module of ours imports grpc; an explicit setting in the environment wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
