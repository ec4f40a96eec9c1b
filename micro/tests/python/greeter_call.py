"""A third-party gRPC client (Python grpcio) calling greeter.Greeter once.

Usage: greeter_call.py ADDRESS METHOD NAME TIMEOUT_SECONDS
Prints one JSON line: {"code": "<grpc status code name>", "details": "...", "msg": "..."}.
The stubs are generated from proto/greeter.proto at run time with grpc_tools.
"""
import json
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


def stubs():
    out = tempfile.mkdtemp()
    proto_dir = os.path.join(ROOT, "proto", "proto")
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.join(proto_dir, "greeter.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    import greeter_pb2, greeter_pb2_grpc  # noqa: E401
    return greeter_pb2, greeter_pb2_grpc


def main():
    address, method, name, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    pb, pb_grpc = stubs()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GreeterStub(channel)
        try:
            reply = getattr(stub, method)(pb.Request(name=name), timeout=timeout)
            print(json.dumps({"code": "OK", "details": "", "msg": reply.msg}))
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name, "details": err.details() or "", "msg": ""}))


if __name__ == "__main__":
    main()
