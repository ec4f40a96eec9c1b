"""Fires a burst of concurrent greeter.Greeter/Test calls with grpcio and prints, one JSON
line per call, its status code name and details (go-micro's error JSON for a refusal).

Usage: PYTHONPATH=<dir with greeter_pb2*.py> python3 burst.py <host:port> <calls>
"""
import json
import sys

import grpc

import greeter_pb2
import greeter_pb2_grpc


def main() -> None:
    address, calls = sys.argv[1], int(sys.argv[2])
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = greeter_pb2_grpc.GreeterStub(channel)
        futures = [
            stub.Test.future(greeter_pb2.Request(name=f"py-{i}"), timeout=10)
            for i in range(calls)
        ]
        for future in futures:
            try:
                future.result()
                print(json.dumps({"code": "OK", "details": ""}))
            except grpc.RpcError as err:
                print(json.dumps({"code": err.code().name, "details": err.details()}))


if __name__ == "__main__":
    main()
