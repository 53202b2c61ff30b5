"""A V2 gRPC client as users write one, with MLServer's own generated stubs (so it runs in .venv-serve): ModelInfer
with image files as a BYTES input, the token in the metadata; prints the answer (outputs as lists) as JSON, or the
gRPC status and details. ``python -m tests.components.deploy.v2_grpc_client ADDRESS TOKEN MODEL VERSION FILE...``"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub
from mlserver.grpc.converters import ModelInferResponseConverter


def main() -> None:
    address, token, model, version, *files = sys.argv[1:]
    images = pb.ModelInferRequest.InferInputTensor(
        name="image", datatype="BYTES", shape=[len(files)],
        contents=pb.InferTensorContents(bytes_contents=[Path(file).read_bytes() for file in files]))
    request = pb.ModelInferRequest(model_name=model, model_version=version, inputs=[images])
    with grpc.insecure_channel(address) as channel:
        try:
            response = GRPCInferenceServiceStub(channel).ModelInfer(
                request, timeout=30, metadata=[("authorization", f"Bearer {token}")])
        except grpc.RpcError as error:
            print(json.dumps({"status": error.code().name, "details": error.details()}))
            return
    answer = ModelInferResponseConverter.to_types(response)
    print(json.dumps({"model_version": answer.model_version,
                      "outputs": {o.name: [v.decode() if isinstance(v, bytes) else v for v in o.data.root]
                                  for o in answer.outputs}}))


if __name__ == "__main__":
    main()
