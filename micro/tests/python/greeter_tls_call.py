"""A third-party gRPC client (Python grpcio) calling greeter.Greeter/Test once over TLS.

Usage: greeter_tls_call.py ADDRESS CA_PEM SERVER_NAME [CERT_PEM KEY_PEM]
With CERT_PEM and KEY_PEM it presents that client certificate (mutual TLS).
Prints one JSON line: {"code": "<grpc status code name>", "details": "...", "msg": "..."}.
The stubs come from PYTHONPATH (micro_test_support::python_greeter_stubs).
"""
import json
import sys

import grpc
import greeter_pb2
import greeter_pb2_grpc


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    address, ca, name = sys.argv[1], sys.argv[2], sys.argv[3]
    chain = key = None
    if len(sys.argv) > 5:
        chain, key = read(sys.argv[4]), read(sys.argv[5])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=key, certificate_chain=chain)
    options = [("grpc.ssl_target_name_override", name)]
    with grpc.secure_channel(address, credentials, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        try:
            reply = stub.Test(greeter_pb2.Request(name="py"), timeout=10)
            print(json.dumps({"code": "OK", "details": "", "msg": reply.msg}))
        except grpc.RpcError as err:
            print(json.dumps({"code": err.code().name, "details": err.details() or "", "msg": ""}))


if __name__ == "__main__":
    main()
